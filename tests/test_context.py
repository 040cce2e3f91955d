"""Context trimming: properties over random histories, plus examples."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.context import REPLY_PRIMING_TOKENS, Budget, ContextMessage, context_window, select_context

SYSTEM = ContextMessage("system", "You are terse.", 10)


def _message(index: int, tokens: int) -> ContextMessage:
    role = "user" if index % 2 == 0 else "assistant"
    return ContextMessage(role, f"message {index}", tokens)


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=4, max_value=400), max_size=60),
    newest_tokens=st.integers(min_value=4, max_value=300),
    budget=st.integers(min_value=320, max_value=5000),
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=30)),
)
def test_trimming_properties(sizes: list[int], newest_tokens: int, budget: int, limit: int | None) -> None:
    history = [_message(i, size) for i, size in enumerate(sizes)]  # oldest first
    newest = ContextMessage("user", "the newest", newest_tokens)
    context = select_context(SYSTEM, newest, reversed(history), budget, limit)

    assert context.messages[0] == {"role": "system", "content": SYSTEM.content}
    assert context.messages[-1] == {"role": "user", "content": "the newest"}
    kept = context.messages[1:-1]
    # Order preserved and a contiguous newest tail of the history.
    expected_tail = history[len(history) - len(kept) :] if kept else []
    assert kept == [{"role": m.role, "content": m.content} for m in expected_tail]
    assert context.prompt_tokens == SYSTEM.tokens + newest.tokens + REPLY_PRIMING_TOKENS + sum(
        m.tokens for m in expected_tail
    )
    assert context.prompt_tokens <= max(budget, SYSTEM.tokens + newest.tokens + REPLY_PRIMING_TOKENS)
    if limit is not None:
        assert len(kept) <= limit
    # Maximal: the next older message would not have fit (or the limit was reached).
    if len(kept) < len(history) and (limit is None or len(kept) < limit):
        next_older = history[len(history) - len(kept) - 1]
        assert context.prompt_tokens + next_older.tokens > budget


def test_example_keeps_newest_that_fit() -> None:
    history = [_message(i, 100) for i in range(5)]
    context = select_context(SYSTEM, ContextMessage("user", "now", 20), reversed(history), 250, None)
    assert [m["content"] for m in context.messages] == [SYSTEM.content, "message 3", "message 4", "now"]


def test_context_windows_known_unknown_and_overrides() -> None:
    assert context_window("gpt-4o-mini", None, {}, 32_768) == 128_000
    assert context_window("openai/gpt-4.1-mini", None, {}, 32_768) == 1_047_576
    assert context_window("gpt-4", None, {}, 32_768) == 8_192
    assert context_window("llama3.1:8b", None, {}, 32_768) == 32_768
    assert context_window("llama3.1:8b", None, {"llama3.1:8b": 8192}, 32_768) == 8192
    assert context_window("gpt-4o", 4096, {"gpt-4o": 8192}, 32_768) == 4096


def test_budget_reserves_output_and_margin() -> None:
    budget = Budget.for_window(8192, max_tokens=1000)
    assert budget.prompt_tokens == 8192 - 1000 - 163
    assert Budget.for_window(8192, None).reserved_output == 2048
    assert budget.shrunk().prompt_tokens == budget.prompt_tokens // 2
