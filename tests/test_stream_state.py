"""What a stream's chunks tell StreamState: the text, the model, the usage and the finish reason."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.llm.state import StreamState
from core.llm.types import ChatRequest, LLMTimeouts, Outcome, Usage


def _state() -> StreamState:
    return StreamState(ChatRequest(model="m", messages=[]), LLMTimeouts(), started=0.0)


def _seen(state: StreamState) -> tuple[Any, ...]:
    return (
        state.model,
        state.usage,
        state.finish_reason,
        state.text_started,
        state.deadline_for_next_token(),
    )


def test_a_typical_stream_gives_its_text_model_usage_and_finish_reason() -> None:
    state = _state()
    chunks: list[dict[str, Any]] = [
        {"model": "gpt-x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"model": "gpt-x", "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]},
        {"model": "gpt-x", "choices": [{"index": 0, "delta": {"content": " world"}, "finish_reason": None}]},
        {"model": "gpt-x", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {"model": "gpt-x", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2}},
    ]
    text = "".join(state.absorb(chunk, float(at)) for at, chunk in enumerate(chunks, start=1))
    assert text == "Hello world"
    end = state.finished()
    assert (end.model, end.usage, end.finish_reason, end.outcome) == (
        "gpt-x",
        Usage(12, 2),
        "length",
        Outcome.CUT_AT_LIMIT,
    )
    assert state.deadline_for_next_token()[0] == 3.0 + LLMTimeouts().between_tokens  # the last words' time


def test_words_that_come_with_the_finish_reason_or_the_usage_keep_both() -> None:
    state = _state()
    state.absorb({"model": "gpt-x", "choices": [{"delta": {"content": "Hi"}}]}, 1.0)
    last = {"model": "gpt-x", "choices": [{"delta": {"content": "!"}, "finish_reason": "stop"}]}
    assert state.absorb(last, 2.0) == "!"
    assert state.finish_reason == "stop"
    with_usage = {
        "choices": [{"delta": {"content": "?"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    assert state.absorb(with_usage, 3.0) == "?"
    assert state.usage == Usage(3, 2)


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 50),
    st.sampled_from(["", "hi", " there", "stop", "length", "gpt-x"]),
    st.lists(st.none(), max_size=1),
)
_deltas = st.one_of(_values, st.fixed_dictionaries({}, optional={"content": _values, "role": _values}))
_choices = st.one_of(
    _values,
    st.fixed_dictionaries({}, optional={"delta": _deltas, "finish_reason": _values}),
)
_chunks = st.fixed_dictionaries(
    {},
    optional={
        "model": _values,
        "choices": st.one_of(_values, st.lists(_choices, max_size=2)),
        "usage": st.one_of(
            _values,
            st.fixed_dictionaries({}, optional={"prompt_tokens": _values, "completion_tokens": _values}),
        ),
    },
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_chunks, max_size=6))
def test_the_quick_path_for_plain_words_agrees_with_the_full_reading(chunks: list[dict[str, Any]]) -> None:
    quick, full = _state(), _state()
    for at, chunk in enumerate(chunks, start=1):
        assert quick.absorb(chunk, float(at)) == full._absorb_any(chunk, float(at))
        assert _seen(quick) == _seen(full)
