"""How fast this machine runs Python right now: the CPU time of a fixed workload.

CPU per reply depends on the machine as much as on the code. The VMs this bench runs on differ from
day to day (the same commit has measured 15.7 and 29.1 ms per Discord reply on two of them), so every
run records the CPU time of the same pure-Python work, at its start and its end. Two runs' figures
compare only together with their reference times.

`python -m bench.reference` prints the figure as JSON.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

REPEATS = 11

_CHUNK = json.dumps(
    {
        "id": "chatcmpl-reference",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": " word"}, "finish_reason": None}],
    }
)


class _Counter:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.count = 0

    def add(self, delta: dict[str, Any]) -> None:
        content = delta.get("content")
        if content:
            self.text.append(content)
            self.count += 1


def workload() -> int:
    """What a reply's path mostly does, in plain Python: decode JSON chunks, look up and build dicts,
    call small methods, join and scan strings."""
    total = 0
    for _ in range(40):
        counter = _Counter()
        for _ in range(150):
            chunk = json.loads(_CHUNK)
            counter.add(chunk["choices"][0]["delta"])
        text = "".join(counter.text)
        total += len(text.split()) + text.count("word") + counter.count
        headers = {f"x-header-{i}": str(i) for i in range(40)}
        total += sum(len(k) + len(v) for k, v in sorted(headers.items()))
    return total


def measure(repeats: int = REPEATS) -> float:
    """The median CPU time of `workload()` in this process, in milliseconds."""
    workload()  # warm
    times = []
    for _ in range(repeats):
        started = time.process_time()
        workload()
        times.append(time.process_time() - started)
    return round(statistics.median(times) * 1000, 1)


def measure_fresh() -> float | None:
    """`measure()` in a new interpreter (the bench's own state does not weigh in); None if it fails."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.reference"], capture_output=True, text=True, timeout=120, check=True
        )
        return float(json.loads(done.stdout)["reference_cpu_ms"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return None


if __name__ == "__main__":
    print(json.dumps({"reference_cpu_ms": measure()}))
