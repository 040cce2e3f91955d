"""What the wire to an OpenAI-compatible endpoint raises when the provider misbehaves.

Each failure carries structured facts (status, the error body's code/param/type, headers), so that
decisions never depend on the wording of a provider's message.
"""

from __future__ import annotations

from collections.abc import Mapping


class ProviderFailure(Exception):
    """The provider (or the network to it) failed, as opposed to a bug here."""


class ProviderUnreachable(ProviderFailure):
    """No connection could be made, or (`dropped`) an open response broke off."""

    def __init__(self, message: str, *, dropped: bool = False) -> None:
        super().__init__(message)
        self.dropped = dropped


class ProviderTimedOut(ProviderFailure):
    """The connection timed out at the socket level."""


class MalformedResponse(ProviderFailure):
    """The body could not be read as the API's JSON."""


class ProviderStatusError(ProviderFailure):
    """An error answer: an HTTP status >= 400, or an `error` object sent inside the stream (no status)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param
        self.type = type
        self.headers: Mapping[str, str] = headers or {}

    def __repr__(self) -> str:
        return f"ProviderStatusError(status={self.status}, code={self.code!r}, param={self.param!r})"


def status_error(
    status: int | None, body: object, headers: Mapping[str, str] | None = None, *, fallback: str = ""
) -> ProviderStatusError:
    """An error answer's body as sent by OpenAI (`{"error": {...}}`) or by looser providers."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = _text(error.get("message")) or _text(error.get("detail")) or fallback
        return ProviderStatusError(
            message or f"Error code: {status}",
            status=status,
            code=_text(error.get("code")),
            param=_text(error.get("param")),
            type=_text(error.get("type")),
            headers=headers,
        )
    message = _text(error) or fallback or f"Error code: {status}"
    return ProviderStatusError(message, status=status, headers=headers)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str | int):
        return str(value)
    return None
