"""Reports: each component's budget beside what it achieved, as a dict/JSON and a rich table.

Usage::

    report = build_report(recorder)            # plain dict, JSON-serialisable
    Path("report.json").write_text(json.dumps(report, indent=2))
    Console().print(render_table(report))
"""

from __future__ import annotations

import math
import re
from typing import Any

from rich.table import Table

from rtvla.metrics.recorder import Recorder

__all__ = ["budget_status", "build_report", "json_safe", "merge_remote", "render_table"]


def json_safe(value: Any, *, redact: re.Pattern[str] | None = None) -> Any:
    """``value`` made valid JSON: NaN/inf become None, keys strings; with ``redact``, the
    value of every key it matches is replaced by ``***`` (API keys never reach a report)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): ("***" if redact is not None and v and redact.search(str(k))
                         else json_safe(v, redact=redact))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, redact=redact) for v in value]
    return value


def budget_status(row: dict[str, Any]) -> str:
    """``ok``, ``violated`` (a critical budget broken) or ``degraded`` (a non-critical one)."""
    if not row.get("violations"):
        return "ok"
    return "violated" if row["budget"].get("critical") else "degraded"


def build_report(recorder: Recorder, *, check: bool = True) -> dict[str, Any]:
    """The report's ``components``, ``violations`` and ``events`` sections from a recorder.

    Each component row: ``budget``, ``achieved_hz``, ``rate_hz`` (windowed),
    ``latency_ms`` {count, mean, p50, p90, p99, p999, max}, ``stages_ms`` (other observed
    durations), ``missed``, ``cpu_percent`` (mean), ``cpu_percent_max``, ``memory_mb``
    (max), ``violations`` {kind: count}, ``status``, ``gauges``.
    """
    if check:
        recorder.check()
    summary = recorder.summary()
    components: dict[str, Any] = {}
    for name, snap in summary["components"].items():
        row = {
            "budget": snap["budget"],
            "achieved_hz": snap["achieved_hz"],
            "rate_hz": snap["rate_hz"],
            "count": snap["count"],
            "latency_ms": snap["latency_ms"],
            "stages_ms": snap["observed_ms"],
            "missed": snap["missed"],
            "cpu_percent": snap["cpu_percent_mean"],
            "cpu_percent_max": snap["cpu_percent_max"],
            "memory_mb": snap["memory_mb_max"],
            "memory_scope": snap.get("memory_scope", "own"),
            "violations": snap["violations"],
            "gauges": snap["gauges"],
        }
        row["status"] = budget_status(row)
        components[name] = row
    return json_safe(
        {
            "elapsed_s": summary["elapsed_s"],
            "components": components,
            "violations": summary["violations"],
            "events": summary["events"],
        }
    )


def merge_remote(report: dict[str, Any], remote: dict[str, Any] | None) -> dict[str, Any]:
    """Add the ``remote`` section (a stack's ``remote_report()``) to ``report`` and mark the
    rows of parts that ran on other hosts: ``row["remote"] = {host, pid, clock, node}``, where
    ``node`` is the part's own row as its node measured it (latency, rate, CPU, memory).

    Usage: ``merge_remote(report, stack.remote_report())`` before writing ``report.json``.
    """
    if not remote:
        return report
    report["remote"] = json_safe(remote)
    for part, info in remote.get("parts", {}).items():
        row = report.get("components", {}).get(part)
        if row is None:
            continue
        node_rows = (info.get("node") or {}).get("components") or {}
        row["remote"] = json_safe({"host": info.get("host"), "pid": info.get("pid"), "clock": info.get("clock"),
                                   "alive": info.get("alive"), "node": node_rows.get(part)})
    return report


def _fmt(value: Any, spec: str = ".2f", unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{unit}"


# "breaches": single samples broke the budget but the run met it (see budget_checks).
_STATUS_STYLE = {"ok": "[green]ok[/]", "breaches": "[yellow]met, breaches[/]",
                 "degraded": "[yellow]degraded[/]", "violated": "[red]VIOLATED[/]"}


def render_table(report: dict[str, Any], *, title: str = "rtvla budgets") -> Table:
    """A rich table: per component the budget beside the measured figures.

    Cells fold instead of being cut with an ellipsis; print it on the CLI's
    ``PipeAwareConsole`` so that piped output (CI logs, ``| tee``) is laid out at full width.
    """
    table = Table(title=title, header_style="bold", show_lines=False)
    for col, justify in (
        ("component", "left"), ("rate Hz (budget)", "right"), ("p50 ms", "right"),
        ("p99 ms", "right"), ("max ms", "right"), ("budget ms", "right"), ("missed", "right"),
        ("CPU % (max)", "right"), ("mem MB", "right"), ("violations", "left"), ("status", "left"),
    ):
        # Fold rather than cut: a narrow console wraps a cell, it never shows "com…".
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for name, row in sorted(report.get("components", {}).items()):
        b = row["budget"]
        if row.get("remote"):
            name = f"{name} @ {row['remote'].get('host') or '?'}"
        lat = row.get("latency_ms") or {}
        target = b.get("rate_hz") or b.get("min_throughput_hz")
        rate = f"{_fmt(row.get('achieved_hz'), '.1f')} ({_fmt(target, 'g')})"
        cpu_cell = f"{_fmt(row.get('cpu_percent'), '.0f')} ({_fmt(row.get('cpu_percent_max'), '.0f')}/{_fmt(b.get('max_cpu_percent'), 'g')})"
        viols = ", ".join(f"{k}x{v}" for k, v in sorted(row.get("violations", {}).items())) or "-"
        table.add_row(
            name, rate, _fmt(lat.get("p50"), ".3f"), _fmt(lat.get("p99"), ".3f"),
            _fmt(lat.get("max"), ".3f"), _fmt(b.get("max_latency_ms"), "g"),
            str(row.get("missed", 0)), cpu_cell,
            f"{_fmt(row.get('memory_mb'), '.0f')}/{_fmt(b.get('max_memory_mb'), 'g')}",
            viols, _STATUS_STYLE.get(row.get("status", "ok"), row.get("status", "")),
        )
    return table
