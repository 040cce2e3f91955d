"""Message length in the unit a platform counts."""

from __future__ import annotations

from typing import Literal

LengthUnit = Literal["chars", "utf8_bytes", "utf16_units"]


def measure(text: str, unit: LengthUnit) -> int:
    if unit == "chars":
        return len(text)
    if unit == "utf8_bytes":
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text.encode("utf-16-le", "surrogatepass")) // 2
