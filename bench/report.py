"""Summaries, targets and the printed table of a bench run."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

TARGETS = {
    "placeholder_ms": 5.0,
    "first_words_ms": 20.0,
    "slowest_reply_s_at_50": 6.0,
    "peak_mib_at_50": 100.0,
    "cpu_ms_per_reply": 15.0,
    "history_ratio": 1.2,
}


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


def _p99(values: Sequence[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    return round(present[min(len(present) - 1, max(0, -(-99 * len(present) // 100) - 1))], 1)


def summarize_overhead(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per platform and kind of event: medians and p99 over every sample of every run."""
    out: dict[str, Any] = {}
    for run in runs:
        for kind, reply in zip(run["kinds"], run["replies"], strict=True):
            out.setdefault(kind, []).append(reply)
    summary = {}
    for kind, replies in out.items():
        summary[kind] = {
            "samples": len(replies),
            "exact": sum(r["exact"] for r in replies),
            "placeholder_ms_p50": _median([r["placeholder_ms"] for r in replies]),
            "placeholder_ms_p99": _p99([r["placeholder_ms"] for r in replies]),
            "first_words_ms_p50": _median([r["first_words_ms"] for r in replies]),
            "first_words_ms_p99": _p99([r["first_words_ms"] for r in replies]),
            "event_to_request_ms_p50": _median([r["request_ms"] for r in replies]),
        }
    return summary


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, target: str, value: Any, met: bool | None) -> None:
        rows.append({"what": name, "target": target, "value": value, "met": met})

    for kind, summary in (results.get("overhead_summary") or {}).items():
        if kind.endswith("follow-up"):
            continue
        value = summary["placeholder_ms_p50"]
        add(
            f"placeholder after the event, {kind} (median)",
            "≤ 5 ms",
            value,
            _le(value, TARGETS["placeholder_ms"]),
        )
        value = summary["first_words_ms_p50"]
        add(f"first words after the model's first chunk, {kind} (median)", "≤ 20 ms", value, _le(value, 20.0))
    for row in results.get("concurrency") or []:
        if row["level"] != 50:
            continue
        platform = row["platform"]
        add(
            f"{platform}, 50 at once: final texts exact",
            "50/50",
            f"{row['exact']}/{row['count']}",
            row["exact"] == row["count"],
        )
        add(f"{platform}, 50 at once: platform 429s", "0", row["platform_429"], row["platform_429"] == 0)
        value = row["slowest_complete_s"]
        if value is None:  # some reply never became exact: the slowest is never complete
            missing = row["count"] - row["exact"]
            add(
                f"{platform}, 50 at once: slowest reply complete (s)",
                "≤ 6 s",
                f"never ({missing} replies)",
                False,
            )
        else:
            add(f"{platform}, 50 at once: slowest reply complete (s)", "≤ 6 s", value, _le(value, 6.0))
        add(
            f"{platform}, 50 at once: peak memory (MiB)",
            "≤ 100 MiB",
            row["peak_mib"],
            _le(row["peak_mib"], 100.0),
        )
    for row in results.get("concurrency") or []:
        if row["level"] in (1, 50):
            add(
                f"{row['platform']}, {row['level']} at once: CPU per reply (ms)",
                "≤ 15 ms",
                row["cpu_ms_per_reply"],
                _le(row["cpu_ms_per_reply"], 15.0),
            )
    for section in results.get("history") or []:
        for case in section["cases"]:
            if case["stored_turns"] == min(c["stored_turns"] for c in section["cases"]):
                continue
            scope = "last 40 messages" if case["history_limit"] else "whole window"
            ratio = case.get("ratio_to_smallest")
            add(
                f"{section['database']}, turn after {case['stored_turns']:,} stored turns vs 20 ({scope})",
                "≤ 1.2×",
                ratio,
                _le(ratio, TARGETS["history_ratio"]) if case["history_limit"] else None,
            )
        add(
            f"{section['database']}: platform reads of earlier messages",
            "0",
            section["history_reads"],
            section["history_reads"] == 0,
        )
    return rows


def _le(value: Any, limit: float) -> bool | None:
    return None if value is None else bool(value <= limit)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join([line, rule, *body])


def render(results: dict[str, Any]) -> str:
    """The whole run as Markdown tables."""
    parts = []
    machine = results["machine"]
    parts.append(
        f"Machine: {machine['nproc']} × {machine['cpu']}, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}. Mode: {results['mode']}; took {results['duration_s']:.0f} s."
    )
    reference = machine.get("reference_cpu_ms")
    if reference:
        parts.append(
            f"Reference workload (bench/reference.py, CPU ms; the machine's speed, to compare runs): "
            f"{reference.get('start')} at the start, {reference.get('end')} at the end."
        )
    summary = results.get("overhead_summary")
    if summary:
        parts.append(
            f"\nOverhead per reply ({results['overhead_runs']} runs; medians and p99 over all samples)\n"
        )
        rows = [
            [
                kind,
                s["samples"],
                f"{s['exact']}/{s['samples']}",
                s["placeholder_ms_p50"],
                s["placeholder_ms_p99"],
                s["first_words_ms_p50"],
                s["first_words_ms_p99"],
                s["event_to_request_ms_p50"],
            ]
            for kind, s in summary.items()
        ]
        parts.append(
            table(
                [
                    "event",
                    "n",
                    "exact",
                    "placeholder ms p50",
                    "p99",
                    "first words ms p50",
                    "p99",
                    "event→model request ms",
                ],
                rows,
            )
        )
    concurrency = results.get("concurrency")
    if concurrency:
        parts.append(
            "\nConcurrency (conversations started at once over 10 channels; one fresh bot per row; a reply "
            "not exact within 90 s counts as never)\n"
        )
        rows = []
        for row in concurrency:
            lag = row.get("event_loop_lag") or {}
            rows.append(
                [
                    row["platform"],
                    row["level"],
                    f"{row['exact']}/{row['count']}",
                    row["platform_429"],
                    row["cpu_ms_per_reply"],
                    row["peak_mib"],
                    row.get("peak_mib_during_run"),
                    lag.get("p99_le_ms", "n/a") if lag else "n/a",
                    lag.get("max_ms_since_start", "n/a") if lag else "n/a",
                    row["slowest_complete_s"]
                    if row["slowest_complete_s"] is not None
                    else f"— ({row['count'] - row['exact']} never)",
                    row["placeholder_ms"]["p50"],
                    row["placeholder_ms"]["p99"],
                    row["first_words_ms"]["p50"],
                    row["first_words_ms"]["p99"],
                ]
            )
        parts.append(
            table(
                [
                    "platform",
                    "at once",
                    "exact",
                    "429s",
                    "CPU ms/reply",
                    "peak MiB",
                    "peak in run",
                    "loop lag p99 ≤ ms",
                    "lag max ms",
                    "slowest reply s",
                    "placeholder ms p50",
                    "p99",
                    "first words ms p50",
                    "p99",
                ],
                rows,
            )
        )
    history = results.get("history")
    if history:
        parts.append("\nHistory growth (the turn after N stored turns; event → model request, medians)\n")
        rows = []
        for section in history:
            for case in section["cases"]:
                rows.append(
                    [
                        section["database"],
                        "last 40 messages" if case["history_limit"] else "whole window",
                        case["stored_turns"],
                        case["event_to_request_ms"],
                        case.get("ratio_to_smallest"),
                        case["request_messages"],
                        case["request_kib"],
                        f"{case['exact']}/{case['count']}",
                        section["history_reads"],
                    ]
                )
        parts.append(
            table(
                [
                    "database",
                    "context",
                    "stored turns",
                    "event→request ms",
                    "× vs 20",
                    "messages sent",
                    "KiB sent",
                    "exact",
                    "platform reads",
                ],
                rows,
            )
        )
    startup = results.get("startup")
    if startup:
        parts.append("\nStart-up (`threadline run` → GET /readyz 200; idle VmRSS 1 s after ready)\n")
        rows = [
            [config, s["ready_s"], s["first_start_with_migration_s"], s["idle_rss_mib"]]
            for config, s in startup.items()
        ]
        parts.append(
            table(["platforms", "ready s (restart)", "ready s (fresh database)", "idle RSS MiB"], rows)
        )
    goals = results.get("targets")
    if goals:
        parts.append("\nTargets\n")
        rows = [
            [g["what"], g["target"], g["value"], {True: "met", False: "MISSED", None: "info"}[g["met"]]]
            for g in goals
        ]
        parts.append(table(["figure", "target", "value", ""], rows))
    if results.get("problems"):
        parts.append(
            "\nProblems (these fail `--quick`):\n" + "\n".join(f"- {p}" for p in results["problems"])
        )
    return "\n".join(parts)
