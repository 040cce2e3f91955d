"""Provider failures as one error type, classified from structured data only.

Decisions use the exception class, the HTTP status and the error body's `code`, `param` and `type`,
never the wording of the provider's message, which differs between providers and versions.
"""

from __future__ import annotations

import secrets
from enum import StrEnum

from core.llm.failures import (
    MalformedResponse,
    ProviderFailure,
    ProviderStatusError,
    ProviderTimedOut,
    ProviderUnreachable,
)

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
INSUFFICIENT_QUOTA = "insufficient_quota"
MODEL_NOT_FOUND_CODE = "model_not_found"
UNSUPPORTED_PARAMETER_CODES = frozenset({"unsupported_parameter", "unknown_parameter", "unsupported_value"})
RETRYABLE_STATUSES = frozenset({408, 409, 429})
PROVIDER_MESSAGE_LIMIT = 200


class ErrorKind(StrEnum):
    AUTH = "auth"
    MODEL_NOT_FOUND = "model_not_found"
    RATE_LIMITED = "rate_limited"
    PROVIDER_DOWN = "provider_down"
    CONTEXT_TOO_LONG = "context_too_long"
    BAD_REQUEST = "bad_request"
    TIMEOUT = "timeout"


def new_error_id() -> str:
    return secrets.token_hex(3)


class LLMError(Exception):
    """A failure to show people: `message` is human and ends with "(error id …)"."""

    def __init__(
        self,
        kind: ErrorKind,
        summary: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        error_id: str | None = None,
    ) -> None:
        self.kind = kind
        self.summary = summary
        self.status = status
        self.retryable = retryable
        self.error_id = error_id or new_error_id()
        self.message = f"{summary} (error id {self.error_id})"
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"LLMError(kind={self.kind.value!r}, status={self.status}, error_id={self.error_id!r})"


def classify(exc: ProviderFailure, *, model: str, endpoint: str, attempts: int = 1) -> LLMError:
    """Turn a provider failure into an LLMError with a human summary."""
    if isinstance(exc, MalformedResponse):
        return LLMError(ErrorKind.PROVIDER_DOWN, "The model provider sent a malformed response.")
    if isinstance(exc, ProviderTimedOut):
        return LLMError(ErrorKind.TIMEOUT, f"The request to {endpoint} timed out.", retryable=True)
    if isinstance(exc, ProviderUnreachable):
        summary = f"Could not reach the model provider at {endpoint}{_after(attempts)}."
        return LLMError(ErrorKind.PROVIDER_DOWN, summary, retryable=True)
    if not isinstance(exc, ProviderStatusError):
        return LLMError(ErrorKind.PROVIDER_DOWN, "The model provider failed in an unexpected way.")
    status = _status(exc)
    error = _classify_status(exc, status, model=model, endpoint=endpoint, attempts=attempts)
    override = _should_retry_header(exc)
    if override is not None:
        error.retryable = override
    return error


def rejects_stream_options(exc: ProviderStatusError) -> bool:
    """A 400/422 that names `stream_options`, or says a parameter is unsupported without naming one."""
    if _status(exc) not in (400, 422):
        return False
    param = exc.param or ""
    if param == "stream_options" or param.startswith("stream_options."):
        return True
    return not param and exc.code in UNSUPPORTED_PARAMETER_CODES


def _status(exc: ProviderStatusError) -> int | None:
    """The HTTP status, or for an error sent inside a stream a numeric `code` (as some gateways do)."""
    if exc.status is not None:
        return exc.status
    if exc.code is not None and exc.code.isdigit():
        return int(exc.code)
    return None


def _classify_status(
    exc: ProviderStatusError, status: int | None, *, model: str, endpoint: str, attempts: int
) -> LLMError:
    code = exc.code
    if code == CONTEXT_LENGTH_EXCEEDED:
        summary = "The conversation is too long for the model's context window."
        return LLMError(ErrorKind.CONTEXT_TOO_LONG, summary, status=status)
    if status in (401, 403):
        summary = f"The model provider rejected the API key (HTTP {status}); check OPENAI_API_KEY."
        return LLMError(ErrorKind.AUTH, summary, status=status)
    if status == 404 or code == MODEL_NOT_FOUND_CODE:
        summary = f"The model '{model}' does not exist on this endpoint ({endpoint}); check the model name."
        return LLMError(ErrorKind.MODEL_NOT_FOUND, summary, status=status)
    if status == 429 and code == INSUFFICIENT_QUOTA:
        summary = "The model provider account has run out of quota or credits."
        return LLMError(ErrorKind.RATE_LIMITED, summary, status=status)
    if status == 429:
        summary = f"The model provider is rate-limiting requests{_after(attempts)}; try again shortly."
        return LLMError(ErrorKind.RATE_LIMITED, summary, status=status, retryable=True)
    if status == 408:
        summary = f"The model provider timed out (HTTP 408){_after(attempts)}."
        return LLMError(ErrorKind.TIMEOUT, summary, status=status, retryable=True)
    if status is None or status >= 500 or status in RETRYABLE_STATUSES:
        shown = f"HTTP {status}" if status is not None else "an error in the stream"
        summary = f"The model provider is failing ({shown}){_after(attempts)}; try again later."
        return LLMError(ErrorKind.PROVIDER_DOWN, summary, status=status, retryable=status is not None)
    summary = f"The model provider refused the request (HTTP {status}): {_provider_message(exc)}"
    return LLMError(ErrorKind.BAD_REQUEST, summary, status=status)


def _should_retry_header(exc: ProviderStatusError) -> bool | None:
    """OpenAI's `x-should-retry` header overrides the status-based decision (as in OpenAI's SDKs)."""
    value = exc.headers.get("x-should-retry")
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def _provider_message(exc: ProviderStatusError) -> str:
    text = " ".join(exc.message.split())
    if len(text) > PROVIDER_MESSAGE_LIMIT:
        text = text[: PROVIDER_MESSAGE_LIMIT - 1] + "…"
    return text


def _after(attempts: int) -> str:
    return f" (gave up after {attempts} attempts)" if attempts > 1 else ""
