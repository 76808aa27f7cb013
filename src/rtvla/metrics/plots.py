"""PNG plots of a run: latency p99 and rate over time against each budget, CPU and memory.

Usage::

    paths = plot_run(read_metrics("runs/x/metrics.jsonl"), report, out_dir="runs/x")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plot_latency_distribution", "plot_run"]


def _series(rows: list[dict[str, Any]], comp: str, getter: Any) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        c = r.get("components", {}).get(comp)
        if c is None:
            continue
        v = getter(c)
        if v is None:
            continue
        xs.append(r["t"])
        ys.append(v)
    return xs, ys


def _per_component(comps: list[str], draw: Any, title: str, path: Path) -> Path:
    """One small panel per component, two columns, drawn by ``draw(ax, component)``."""
    n = len(comps)
    cols = 2 if n > 1 else 1
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 2.6 * nrows), squeeze=False)
    for ax, comp in zip(axes.flat, comps):
        draw(ax, comp)
        ax.set_title(comp)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supxlabel("time (s)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_run(
    rows: list[dict[str, Any]], report: dict[str, Any], out_dir: str | Path
) -> list[Path]:
    """Write latency.png, rate.png and utilization.png (plus adaptation.png when present)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comps = sorted({c for r in rows for c in r.get("components", {})})
    budgets = {n: row["budget"] for n, row in report.get("components", {}).items()}
    written: list[Path] = []
    if not comps:
        return written

    def latency(ax: Any, comp: str) -> None:
        xs, p99 = _series(rows, comp, lambda c: c["latency_ms"].get("p99"))
        xs50, p50 = _series(rows, comp, lambda c: c["latency_ms"].get("p50"))
        ax.plot(xs, p99, label="p99", color="tab:red")
        ax.plot(xs50, p50, label="p50", color="tab:blue")
        b = budgets.get(comp)
        if b:
            ax.axhline(b["max_latency_ms"], color="k", ls="--", lw=1, label="budget")
        ax.set_ylabel("ms")
        ax.legend(fontsize=7, loc="upper right")

    def rate(ax: Any, comp: str) -> None:
        xs, hz = _series(rows, comp, lambda c: c.get("rate_hz"))
        ax.plot(xs, hz, color="tab:green", label="rate")
        b = budgets.get(comp)
        if b and b.get("min_throughput_hz"):
            ax.axhline(b["min_throughput_hz"], color="k", ls="--", lw=1, label="min budget")
        ax.set_ylabel("Hz")
        ax.legend(fontsize=7, loc="lower right")

    # Panels only for components with a time series (a one-off LLM call or task is a single
    # point: the report's table says it better).
    timed = [c for c in comps if len(_series(rows, c, lambda r: r["latency_ms"].get("p99"))[0]) >= 2]
    looped = [c for c in comps if (budgets.get(c) or {}).get("rate_hz")]
    if timed:
        written.append(_per_component(timed, latency, "Latency per interval against budget", out / "latency.png"))
    if looped:
        written.append(_per_component(looped, rate, "Throughput against budget", out / "rate.png"))

    fig, (ax_cpu, ax_mem) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for comp in comps:
        xs, cpu = _series(rows, comp, lambda c: c.get("cpu_percent") or None)
        if cpu:
            ax_cpu.plot(xs, cpu, label=comp)
        xs, mem = _series(rows, comp, lambda c: c.get("memory_mb") or None)
        if mem:
            ax_mem.plot(xs, mem, label=comp)
    sys_x = [r["t"] for r in rows if "system" in r]
    if sys_x:
        ax_cpu.plot(sys_x, [r["system"].get("cpu_percent", 0) for r in rows if "system" in r],
                    color="k", lw=1.5, label="system (all cores)")
    ax_cpu.set_ylabel("CPU %")
    ax_mem.set_ylabel("memory MB")
    ax_mem.set_xlabel("time (s)")
    if ax_cpu.get_legend_handles_labels()[0]:  # a run too short for any sample has none
        ax_cpu.legend(fontsize=7, ncol=3)
    fig.suptitle("Utilization")
    fig.tight_layout()
    p = out / "utilization.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    written.append(p)

    levels = [(r["t"], r["adapt_level"]) for r in rows if "adapt_level" in r]
    if levels:
        fig, ax = plt.subplots(figsize=(9, 2.5))
        ax.step([t for t, _ in levels], [lv for _, lv in levels], where="post")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("level (0 = full quality)")
        ax.set_title("Adaptive quality level")
        fig.tight_layout()
        p = out / "adaptation.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        written.append(p)
    return written


def plot_latency_distribution(
    samples: dict[str, Any], path: str | Path, *, title: str, xlabel: str = "lateness (us)"
) -> Path:
    """Overlayed histograms of several named sample arrays (for benchmarks)."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, values in samples.items():
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        v = np.clip(v, 1e-3, None)
        bins = np.logspace(np.log10(v.min()), np.log10(max(v.max(), v.min() * 1.01)), 60)
        ax.hist(v, bins=bins, histtype="step", label=label, lw=1.4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
