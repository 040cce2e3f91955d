"""The model's answers: ~870 characters in ~150 one-word chunks, unique per conversation.

Each prompt carries a tag (`[c17]`); the fake model answers that tag with `answer(tag)`, so the bench
knows the exact text every reply must end with. The answer has the Markdown a real one has (bold,
inline code, a list) so the renderer and the platform's Markdown conversion do their real work.
"""

from __future__ import annotations

import random
import re

TAG = re.compile(r"\[([cs][0-9a-z-]+)\]")
_VOCABULARY = """
the a of to and in that is for it as with on was be by this are or from at an which not have but can
all one more will their if has also its when there so been other into some what them only time than
then these would each about first because through after where much should well reply stream thread
message model token chunk edit budget channel workspace setting persona answer question context
history window limit request platform latency memory process event conversation configuration
deployment throughput database migration concurrency
"""
_WORDS = tuple(_VOCABULARY.split())


def prompt(tag: str, words: int = 12) -> str:
    """What a person asks; the tag routes the fake model's answer."""
    rng = random.Random(f"prompt-{tag}")
    return f"[{tag}] " + " ".join(rng.choice(_WORDS) for _ in range(words)) + "?"


def tag_of(text: str) -> str | None:
    found = TAG.search(text)
    return found.group(1) if found else None


def answer(tag: str) -> str:
    """A deterministic ~870-character Markdown answer of ~150 words for `tag`; tags starting with
    "s" get a short one (~25 words), used where only the first words matter."""
    rng = random.Random(f"answer-{tag}")

    def sentence(n: int) -> str:
        words = [rng.choice(_WORDS) for _ in range(n)]
        return " ".join(words).capitalize() + "."

    intro = f"Answer {tag}: " + sentence(14) + " " + sentence(12)
    if tag.startswith("s"):
        return intro
    code = "`" + rng.choice(_WORDS) + "_id`"
    body = "**" + sentence(4)[:-1] + "** " + sentence(13) + " Use " + code + " " + sentence(9)
    items = "\n".join("- " + sentence(10) for _ in range(4))
    outro = sentence(16) + " " + sentence(15) + " " + sentence(16)
    return f"{intro}\n\n{body}\n\n{items}\n\n{outro}"


def chunks(text: str) -> list[str]:
    """One chunk per word, the space (or newline) travelling with the following word."""
    pieces = re.findall(r"\s*\S+", text)
    return pieces if "".join(pieces) == text else [*pieces, text[len("".join(pieces)) :]]
