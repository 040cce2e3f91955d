"""The LLM client: streaming chat completions with bounded retries, time-outs and clear outcomes."""

from core.llm.client import LLMClient
from core.llm.errors import ErrorKind, LLMError
from core.llm.types import (
    ChatRequest,
    LLMTimeouts,
    Outcome,
    RetryPolicy,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)

__all__ = [
    "ChatRequest",
    "ErrorKind",
    "LLMClient",
    "LLMError",
    "LLMTimeouts",
    "Outcome",
    "RetryPolicy",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "Usage",
]
