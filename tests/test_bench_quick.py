"""The benchmark's CI mode: `python -m bench --quick`, the real `threadline run` against the fakes.

It fails only when a reply's final text is not exact or a platform answered 429 (a budget exceeded),
never on a timing (timings belong to `make bench`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_bench_delivers_every_reply_exactly_within_the_platforms_budgets(tmp_path: Path) -> None:
    output = tmp_path / "quick.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert output.exists(), f"the bench did not finish:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    results = json.loads(output.read_text())

    rows = results["concurrency"]
    assert sorted((row["platform"], row["level"]) for row in rows) == [
        ("discord", 1),
        ("discord", 10),
        ("slack", 1),
        ("slack", 10),
    ]
    for row in rows:
        assert row["exact"] == row["count"], row
        assert row["platform_429"] == 0, row
    history = results["history"][0]
    assert [case["exact"] for case in history["cases"]] == [1], history
    assert history["history_reads"] == 0
    assert results["problems"] == []
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
