"""What the model sees: the system prompt plus the newest messages that fit the token budget."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

# Known context windows by model-name prefix (longest prefix wins). Unknown models get the
# configured default; per-model overrides and the persona's own setting come first.
KNOWN_WINDOWS: dict[str, int] = {
    "gpt-5": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "gpt-4-turbo": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
}
DEFAULT_OUTPUT_RESERVE = 4_096
SAFETY_MARGIN_RATIO = 0.02
SAFETY_MARGIN_MIN = 64
REPLY_PRIMING_TOKENS = 3


def context_window(model: str, persona_window: int | None, overrides: Mapping[str, int], default: int) -> int:
    if persona_window:
        return persona_window
    if model in overrides:
        return overrides[model]
    bare = model.rsplit("/", 1)[-1]  # "openai/gpt-4o" on gateways
    matches = [prefix for prefix in KNOWN_WINDOWS if bare.startswith(prefix)]
    if matches:
        return KNOWN_WINDOWS[max(matches, key=len)]
    return default


@dataclass(frozen=True, slots=True)
class Budget:
    """Tokens available for the prompt: window − reserved output − safety margin."""

    window: int
    reserved_output: int
    scale: float = 1.0  # below 1 after the provider said the context was too long

    @classmethod
    def for_window(cls, window: int, max_tokens: int | None) -> Budget:
        reserve = max_tokens if max_tokens else min(DEFAULT_OUTPUT_RESERVE, window // 4)
        return cls(window=window, reserved_output=reserve)

    @property
    def margin(self) -> int:
        return max(SAFETY_MARGIN_MIN, int(self.window * SAFETY_MARGIN_RATIO))

    @property
    def prompt_tokens(self) -> int:
        return max(0, int((self.window - self.reserved_output - self.margin) * self.scale))

    def shrunk(self, factor: float = 0.5) -> Budget:
        """A harder budget after the provider said the context was too long."""
        return replace(self, scale=self.scale * factor)


@dataclass(frozen=True, slots=True)
class ContextMessage:
    role: str
    content: str
    tokens: int  # message overhead included
    exact: bool = True  # False: `tokens` is an upper bound (see core.tokens.message_token_bound)


@dataclass(frozen=True, slots=True)
class Context:
    messages: list[dict[str, str]]
    prompt_tokens: int  # what is sent, priming included (an upper bound if any count is one)
    history_used: int  # earlier messages included (not counting the system prompt and the new one)


def select_context(
    system: ContextMessage,
    newest: ContextMessage,
    history_newest_first: Iterable[ContextMessage],
    budget_tokens: int,
    history_limit: int | None,
) -> Context:
    """Keep the system prompt and the newest message always; add earlier ones newest-first while they fit.

    Stops at the first message that does not fit, so the kept history is one contiguous tail.
    """
    used = system.tokens + newest.tokens + REPLY_PRIMING_TOKENS
    kept: list[ContextMessage] = []
    for message in history_newest_first:
        if history_limit is not None and len(kept) >= history_limit:
            break
        if used + message.tokens > budget_tokens:
            break
        kept.append(message)
        used += message.tokens
    ordered = [system, *reversed(kept), newest]
    return Context(
        messages=[{"role": m.role, "content": m.content} for m in ordered],
        prompt_tokens=used,
        history_used=len(kept),
    )
