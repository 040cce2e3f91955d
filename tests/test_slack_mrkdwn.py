"""Markdown → Slack mrkdwn, and Slack text → what the model reads."""

from __future__ import annotations

import pytest

from bots.slack.mrkdwn import WORD_JOINER, from_slack, mentioned_users, to_mrkdwn


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __also__", "*bold* and *also*"),
        ("*it* and _it_", "_it_ and _it_"),
        ("~~gone~~", "~gone~"),
        ("snake_case_name and 2*3*4 stay", "snake_case_name and 2*3*4 stay"),
        ("**bold with *it* inside**", "*bold with _it_ inside*"),
        ("see [the docs](https://example.com/a?b=1&c=2)", "see <https://example.com/a?b=1&amp;c=2|the docs>"),
        ("<https://example.com>", "<https://example.com>"),
        ("[x](https://example.com)[y](https://e.org)", "<https://example.com|x><https://e.org|y>"),
        ("# Title", "*Title*"),
        ("### A **bold** heading ###", "*A bold heading*"),
        ("- one\n* two\n+ three", "• one\n• two\n• three"),
        ("- top\n  - nested", "• top\n  ◦ nested"),
        ("- [ ] todo\n- [x] done", "• ☐ todo\n• ☑ done"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("> quoted *it*", "> quoted _it_"),
        ("---", "──────────"),
        ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
        ("`a < b` and `**not bold**`", "`a &lt; b` and `**not bold**`"),
        (
            "```python\nif a < b and x & y:\n    print('**x**')\n```",
            "```\nif a &lt; b and x &amp; y:\n    print('**x**')\n```",
        ),
        ("~~~\ncode\n~~~", "```\ncode\n```"),
    ],
)
def test_to_mrkdwn(markdown: str, expected: str) -> None:
    assert to_mrkdwn(markdown) == expected


def test_fence_inside_a_list_item() -> None:
    markdown = "1. step\n    ```bash\n    echo **x** <y>\n    ```\n2. next"
    assert to_mrkdwn(markdown) == "1. step\n```\n    echo **x** &lt;y&gt;\n```\n2. next"


def test_unclosed_fence_keeps_escaping_to_the_end() -> None:
    assert to_mrkdwn("```js\nlet a = b < c;\n# not a heading") == "```\nlet a = b &lt; c;\n# not a heading"


@pytest.mark.parametrize(
    "markdown",
    [
        "<!channel> hi",
        "<!here>",
        "<!everyone>",
        "<@U123> look",
        "<!subteam^S1|@team>",
        "```\n<!channel>\n```",
    ],
)
def test_model_output_never_pings(markdown: str) -> None:
    converted = to_mrkdwn(markdown)
    assert "<!" not in converted and "<@" not in converted


@pytest.mark.parametrize("word", ["@channel", "@here", "@everyone", "@Channel"])
def test_plain_broadcast_words_are_neutralised(word: str) -> None:
    converted = to_mrkdwn(f"hello {word}!")
    assert converted == f"hello @{WORD_JOINER}{word[1:]}!"


def test_links_with_unsafe_targets_stay_text() -> None:
    assert to_mrkdwn("[click](!here)") == "[click](!here)"
    assert to_mrkdwn("[js](javascript:alert(1))") == "[js](javascript:alert(1))"


def test_link_labels_are_escaped() -> None:
    assert to_mrkdwn("[a <b> & c](https://x.org)") == "<https://x.org|a &lt;b&gt; &amp; c>"


def _names(user: str) -> str:
    return {"U1": "Alice", "U2": "Bob"}.get(user, user)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<@UBOT> hello", "hello"),
        ("<@UBOT>: what is 2+2?", "what is 2+2?"),
        ("hey <@UBOT>, reset", "hey reset"),
        ("ask <@U1> and <@U2|bobby>", "ask @Alice and @bobby"),
        ("<@U9> unknown", "@U9 unknown"),
        ("a &lt;b&gt; &amp;amp; c", "a <b> &amp; c"),
        ("see <https://x.org/a?b=1&amp;c=2|the docs>", "see the docs (https://x.org/a?b=1&c=2)"),
        ("<https://x.org>", "https://x.org"),
        ("<mailto:a@b.c|a@b.c>", "a@b.c"),
        ("in <#C1|general> cc <!here>", "in #general cc @here"),
        ("<@UBOT>\n```\n  indented\n```", "```\n  indented\n```"),
    ],
)
def test_from_slack(text: str, expected: str) -> None:
    assert from_slack(text, user_name=_names, bot_user_id="UBOT") == expected


def test_mentioned_users() -> None:
    assert mentioned_users("<@U1> <@UBOT> <@U2|bob> <@W3>") == {"U1", "UBOT", "W3"}
