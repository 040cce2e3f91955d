"""What one stream has seen so far, its deadlines, and how it ends (outcome + notice)."""

from __future__ import annotations

from typing import Any

from core.llm.errors import ErrorKind, LLMError
from core.llm.types import ChatRequest, LLMTimeouts, Outcome, StreamEnd, Usage

FINISH_OUTCOMES = {"length": Outcome.CUT_AT_LIMIT, "content_filter": Outcome.FILTERED}


def seconds(value: float) -> str:
    return f"{value:g} s"


class StreamState:
    def __init__(self, request: ChatRequest, timeouts: LLMTimeouts, started: float) -> None:
        self.request = request
        self.timeouts = timeouts
        self.model: str | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.text_started = False
        self.started = started
        self._last_token_at = started
        self._first_token_deadline = started + timeouts.first_token
        self._total_deadline = started + timeouts.total

    def begin_attempt(self) -> None:
        """Forget what a failed attempt said before its first token; a retry starts afresh."""
        self.model = None
        self.usage = None
        self.finish_reason = None

    def deadline_before_text(self) -> tuple[float, Outcome]:
        if self._total_deadline <= self._first_token_deadline:
            return self._total_deadline, Outcome.TIMEOUT_TOTAL
        return self._first_token_deadline, Outcome.TIMEOUT_FIRST_TOKEN

    def deadline_for_next_token(self) -> tuple[float, Outcome]:
        gap_deadline = self._last_token_at + self.timeouts.between_tokens
        if self._total_deadline <= gap_deadline:
            return self._total_deadline, Outcome.TIMEOUT_TOTAL
        return gap_deadline, Outcome.TIMEOUT_BETWEEN_TOKENS

    def absorb(self, chunk: dict[str, Any], now: float) -> str:
        """Record what `chunk` says and return its content text ("" when it carries none).

        Providers are lenient in what they send: null or empty `choices`, a null delta, non-string
        content, usage only in the last chunk; anything unexpected is ignored rather than trusted.
        """
        # Nearly every chunk is one choice's next words and nothing else: its text, with the fewest
        # look-ups (this runs ~150 times per reply). Any other chunk takes the full path below.
        if self.model is not None and chunk.get("usage") is None:
            choices = chunk.get("choices")
            if type(choices) is list and choices:
                choice = choices[0]
                if type(choice) is dict and choice.get("finish_reason") is None:
                    delta = choice.get("delta")
                    content = delta.get("content") if type(delta) is dict else None
                    if type(content) is str and content:
                        self.text_started = True
                        self._last_token_at = now
                        return content
        return self._absorb_any(chunk, now)

    def _absorb_any(self, chunk: dict[str, Any], now: float) -> str:
        model = chunk.get("model")
        if self.model is None and isinstance(model, str) and model:
            self.model = model
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int) and isinstance(completion, int):
                self.usage = Usage(prompt, completion)
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        finish_reason = choice.get("finish_reason")
        if finish_reason and isinstance(finish_reason, str):
            self.finish_reason = finish_reason
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if not isinstance(content, str) or not content:
            return ""
        self.text_started = True
        self._last_token_at = now
        return content

    def finished(self) -> StreamEnd:
        """The stream ended on its own: the outcome follows the finish reason."""
        if self.finish_reason is None:
            return self._end(Outcome.NO_FINISH_REASON)
        outcome = FINISH_OUTCOMES.get(self.finish_reason, Outcome.COMPLETE)
        return self._end(outcome, notice=self._finish_notice(outcome))

    def timed_out(self, outcome: Outcome) -> StreamEnd:
        if self.finish_reason is not None:
            return self.finished()  # only [DONE] or the usage chunk was missing: the text is whole
        summary, notice = self._timeout_texts(outcome)
        error = LLMError(ErrorKind.TIMEOUT, summary)
        return self._end(outcome, error=error, notice=notice)

    def broken(self, error: LLMError, *, connection_dropped: bool) -> StreamEnd:
        """The stream raised after text was shown: keep the text, never retry."""
        if self.finish_reason is not None:
            return self.finished()
        if connection_dropped:
            notice = "⚠️ The connection to the model dropped; the reply is incomplete."
        else:
            notice = "⚠️ The model provider reported an error; the reply is incomplete."
        return self._end(Outcome.INTERRUPTED, error=error, notice=notice)

    def failed(self, error: LLMError) -> StreamEnd:
        return self._end(Outcome.FAILED, error=error, notice=f"⚠️ {error.message}")

    def _end(
        self, outcome: Outcome, *, error: LLMError | None = None, notice: str | None = None
    ) -> StreamEnd:
        return StreamEnd(
            outcome=outcome,
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            error=error,
            notice=notice,
        )

    def _finish_notice(self, outcome: Outcome) -> str | None:
        if outcome is Outcome.CUT_AT_LIMIT:
            limit = self.request.max_tokens
            if limit is None:
                return "⚠️ Reply cut at the model's output limit."
            return f"⚠️ Reply cut at the token limit (max_tokens={limit})."
        if outcome is Outcome.FILTERED:
            return "⚠️ The provider filtered this reply."
        return None

    def _timeout_texts(self, outcome: Outcome) -> tuple[str, str]:
        """(summary for the error, notice to show)."""
        if outcome is Outcome.TIMEOUT_FIRST_TOKEN:
            summary = f"The model did not start answering within {seconds(self.timeouts.first_token)}."
            return summary, f"⏱️ {summary}"
        if outcome is Outcome.TIMEOUT_BETWEEN_TOKENS:
            summary = f"The model stopped sending text for {seconds(self.timeouts.between_tokens)}."
            return summary, f"⏱️ {summary[:-1]}; the reply is incomplete."
        limit = seconds(self.timeouts.total)
        if self.text_started:
            summary = f"The reply took longer than {limit} and was stopped."
            return summary, f"⏱️ {summary[:-1]}; it is incomplete."
        summary = f"The model did not answer within {limit}."
        return summary, f"⏱️ {summary}"
