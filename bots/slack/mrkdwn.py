"""Standard Markdown (what models write) → Slack's classic mrkdwn, and Slack's text → plain text.

Outgoing (`to_mrkdwn`):
- `**bold**` / `__bold__` → `*bold*`; `*it*` / `_it_` → `_it_`; `~~gone~~` → `~gone~`
- `[label](https://…)` → `<https://…|label>`; `<https://…>` → `<https://…>`
- `# Heading` → `*Heading*`; `- item` / `* item` / `+ item` → `• item`; task boxes → ☐ / ☑
- fenced code keeps its content, loses its language tag (Slack shows it literally otherwise)
- `&`, `<`, `>` are escaped everywhere, inside code too; only the links made here and the `>` of
  block quotes stay raw. So `<!channel>`, `<!here>`, `<@U123>` from a model can never ping, and
  `@channel` / `@here` / `@everyone` get a word joiner after the `@` (outside code).

Incoming (`from_slack`): user mentions → names, `<url|label>` → `label (url)`, entities unescaped.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

WORD_JOINER = "\u2060"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(?P<text>.*?))?(?:[ \t]+#+)?[ \t]*$")
_BULLET = re.compile(r"^(?P<indent>[ \t]*)[-*+][ \t]+(?P<rest>.*)$")
_TASK = re.compile(r"^\[(?P<mark>[ xX])\][ \t]+")
_QUOTE = re.compile(r"^(?P<marks>(?: {0,3}>[ \t]?)+)(?P<rest>.*)$")
_RULE = re.compile(r"^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$")

# Inline constructs that must not be touched by emphasis conversion or escaping rules.
_INLINE_CODE = re.compile(r"(?<!`)(?P<ticks>`+)(?!`)(?P<code>.+?)(?<!`)(?P=ticks)(?!`)")
_LINK = re.compile(
    r"(?<!!)\[(?P<label>[^\[\]\n]*)\]\((?P<url>[^()\s]+(?:\([^()\s]*\)[^()\s]*)*)(?:\s+\"[^\"]*\")?\)"
)
_IMAGE = re.compile(r"!\[(?P<label>[^\[\]\n]*)\]\((?P<url>[^()\s]+)(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<(?P<url>(?:https?|mailto):[^<>\s]+)>")
_SAFE_URL = re.compile(r"^(?:https?://|mailto:)[^\s<>|]+$", re.IGNORECASE)

_BOLD_STAR = re.compile(r"\*\*(?=\S)(?P<t>.+?)(?<=\S)\*\*")
_BOLD_UNDER = re.compile(r"(?<![\w_])__(?=\S)(?P<t>.+?)(?<=\S)__(?![\w_])")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(?P<t>[^*\n]*?[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(?P<t>.+?)(?<=\S)~~")
_BROADCAST = re.compile(r"@(?=(?:channel|here|everyone)\b)", re.IGNORECASE)

_PH_OPEN, _PH_CLOSE = "\ue000", "\ue001"  # placeholders for protected inline pieces
_BOLD_MARK = "\ue002"  # bold marker, turned into `*` at the very end
_PLACEHOLDER = re.compile(f"{_PH_OPEN}(\\d+){_PH_CLOSE}")


def escape(text: str) -> str:
    """Slack's three control characters as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def neutralise_broadcasts(text: str) -> str:
    """`@channel` → `@\u2060channel`: reads the same, never notifies anyone."""
    return _BROADCAST.sub("@" + WORD_JOINER, text)


def _link(url: str, label: str) -> str | None:
    url = url.strip()
    if not _SAFE_URL.match(url):
        return None
    url = escape(url)
    label = label.strip()
    if not label or label == url:
        return f"<{url}>"
    return f"<{url}|{neutralise_broadcasts(escape(label))}>"


def _inline(text: str, *, heading: bool = False) -> str:
    """Convert one line of non-code Markdown text."""
    protected: list[str] = []

    def protect(value: str) -> str:
        protected.append(value)
        return f"{_PH_OPEN}{len(protected) - 1}{_PH_CLOSE}"

    def code(match: re.Match[str]) -> str:
        ticks = match.group("ticks")
        # Slack knows single backticks only; longer runs keep their content verbatim (escaped).
        return protect("`" + escape(match.group("code")) + "`" if len(ticks) == 1 else escape(match.group(0)))

    def link(match: re.Match[str]) -> str:
        made = _link(match.group("url"), match.group("label"))
        return protect(made) if made is not None else match.group(0)

    def image(match: re.Match[str]) -> str:
        made = _link(match.group("url"), match.group("label") or match.group("url"))
        return protect(made) if made is not None else match.group(0)

    text = _INLINE_CODE.sub(code, text)
    text = _IMAGE.sub(image, text)
    text = _LINK.sub(link, text)
    text = _AUTOLINK.sub(lambda m: protect(f"<{escape(m.group('url'))}>"), text)
    text = neutralise_broadcasts(escape(text))

    bold: Callable[[re.Match[str]], str] = (
        (lambda m: m.group("t")) if heading else (lambda m: f"{_BOLD_MARK}{m.group('t')}{_BOLD_MARK}")
    )
    text = _BOLD_STAR.sub(bold, text)
    text = _BOLD_UNDER.sub(bold, text)
    text = _ITALIC_STAR.sub(lambda m: f"_{m.group('t')}_", text)
    text = _STRIKE.sub(lambda m: f"~{m.group('t')}~", text)
    text = text.replace(_BOLD_MARK, "*")
    return _PLACEHOLDER.sub(lambda m: protected[int(m.group(1))], text)


@functools.lru_cache(maxsize=1024)  # a streamed reply is converted again at every edit, its lines with it
def _block_line(line: str) -> str:
    if _RULE.match(line):
        return "──────────"
    heading = _HEADING.match(line)
    if heading:
        title = _inline(heading.group("text") or "", heading=True).strip()
        return f"*{title}*" if title else ""
    quote = _QUOTE.match(line)
    if quote:
        depth = quote.group("marks").count(">")
        # Slack renders one level of quote; deeper levels are flattened.
        return ">" * min(depth, 1) + " " + _block_line(quote.group("rest")) if quote.group("rest") else ">"
    bullet = _BULLET.match(line)
    if bullet:
        rest = bullet.group("rest")
        task = _TASK.match(rest)
        box = ""
        if task:
            box = "☑ " if task.group("mark") in "xX" else "☐ "
            rest = rest[task.end() :]
        indent = bullet.group("indent").replace("\t", "    ")
        mark = "•" if len(indent) < 2 else "◦"
        return f"{indent}{mark} {box}{_inline(rest)}"
    return _inline(line)


def to_mrkdwn(markdown: str) -> str:
    """Convert standard Markdown into Slack mrkdwn (see the module docstring)."""
    out: list[str] = []
    fence: str | None = None  # the open fence's marker while inside a code block
    for line in markdown.split("\n"):
        if fence is not None:
            stripped = line.strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) <= {fence[0]}:
                out.append("```")
                fence = None
            else:
                out.append(escape(line))
            continue
        opened = _FENCE.match(line)
        if opened and not (opened.group("fence")[0] == "`" and "`" in opened.group("info")):
            fence = opened.group("fence")
            out.append("```")
            continue
        out.append(_block_line(line))
    return "\n".join(out)


# -- incoming ------------------------------------------------------------------------------------

_SLACK_ANGLE = re.compile(r"<(?P<body>[^<>]+)>")
_USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)>")
_BOT_MENTION = "\x00"


def from_slack(text: str, *, user_name: Callable[[str], str], bot_user_id: str | None = None) -> str:
    """Slack message text → what the model reads.

    The bot's own mention is removed; `<@U1>` → `@Name`; `<#C1|general>` → `#general`;
    `<!here>` → `@here`; `<url|label>` → `label (url)`; `&lt; &gt; &amp;` are undone.
    """

    def replace(match: re.Match[str]) -> str:
        body = match.group("body")
        target, _, label = body.partition("|")
        if target.startswith("@"):
            user = target[1:]
            if bot_user_id is not None and user == bot_user_id:
                return _BOT_MENTION
            return "@" + (label or user_name(user))
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!subteam^"):
            return "@" + (label.lstrip("@") or target.removeprefix("!subteam^"))
        if target.startswith("!date^"):
            return label or target
        if target.startswith("!"):
            return "@" + (label or target[1:])
        url = unescape(target)
        if label:
            label = unescape(label)
            shown = url.removeprefix("mailto:")
            return label if label in (url, shown) else f"{label} ({url})"
        return url.removeprefix("mailto:") if url.startswith("mailto:") else url

    parts: list[str] = []
    last = 0
    for match in _SLACK_ANGLE.finditer(text):
        parts.append(unescape(text[last : match.start()]))
        parts.append(replace(match))
        last = match.end()
    parts.append(unescape(text[last:]))
    converted = "".join(parts)
    converted = re.sub(rf"^\s*{_BOT_MENTION}[\s:,]*", "", converted)
    converted = re.sub(rf"(^|\n)[ \t]*{_BOT_MENTION}[,:]?[ \t]*", r"\1", converted)
    converted = re.sub(rf"[ \t]*{_BOT_MENTION}[,:]?[ \t]*", " ", converted)
    return converted.strip()


def mentioned_users(text: str) -> set[str]:
    """The user ids mentioned as `<@U…>` without a label (their names need a users.info look-up)."""
    return {match.group(1) for match in _USER_MENTION.finditer(text)}
