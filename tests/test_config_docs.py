"""Every setting is documented where operators look: .env.example and the README."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Settings

ROOT = Path(__file__).resolve().parent.parent
VARIABLES = sorted(str(field.validation_alias) for field in Settings.model_fields.values())


@pytest.mark.parametrize("document", [".env.example", "README.md"])
def test_every_variable_is_documented(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    missing = [name for name in VARIABLES if name not in text]
    assert missing == []
