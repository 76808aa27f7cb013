"""``rtvla bench channels``: publish-to-read latency, in-process vs shared memory vs mp.Queue."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from rtvla.cli.common import console, fail, stage_progress, write_json

__all__ = ["register"]

_GOAL_RATIO = 3.0  # issue 6: shm at least 3x faster than mp.Queue at p50 for 921,600 B
_GOAL_P99_US = 500.0  # issue 6: shm p99 <= 500 us on an idle machine
_FRAME_BYTES = 921_600


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @bench.command("channels")
    def channels(
        iterations: int = typer.Option(1000, "--iterations", "-n", help="measured frames per channel and size"),
        warmup: int = typer.Option(50, help="frames sent first and not measured"),
        payloads: str = typer.Option("64,921600", help="comma-separated payload sizes in bytes"),
        shm_read: str = typer.Option("copy", help="how the shm reader takes a frame: copy, out (preallocated) or view"),
        gap_ms: float = typer.Option(1.0, help="pause between frames, so each read includes a wake-up"),
        json_path: Path | None = typer.Option(None, "--json", help="write the rows as JSON"),
        plot: Path = typer.Option(Path("rtvla-bench/channels.png"), help="latency histogram PNG"),
    ) -> None:
        """Publish-to-read latency p50/p99 through LatestValue, SharedArrayChannel and mp.Queue."""
        from rtvla.bench.channels import CHANNEL_KINDS, SHM_READS, bench_channels, ratios
        from rtvla.metrics.plots import plot_latency_distribution

        if iterations < 1:
            fail(f"--iterations must be >= 1, got {iterations}")
        if warmup < 0:
            fail(f"--warmup must be >= 0, got {warmup}")
        if gap_ms < 0:
            fail(f"--gap-ms must be >= 0, got {gap_ms}")
        if shm_read not in SHM_READS:
            fail(f"--shm-read must be one of {', '.join(SHM_READS)}, got {shm_read!r}")
        try:
            sizes = tuple(int(p) for p in payloads.split(",") if p.strip())
        except ValueError:
            fail(f"--payloads must be comma-separated integers, got {payloads!r}")
        if not sizes or any(s <= 0 for s in sizes):
            fail(f"--payloads must list sizes > 0, got {payloads!r}")

        total = len(sizes) * len(CHANNEL_KINDS)
        with stage_progress(total, lambda label: f"{label}: {iterations + warmup} frames") as step:
            rows, samples = bench_channels(iterations=iterations, warmup=warmup, payloads=sizes,
                                           gap_s=gap_ms / 1e3, shm_read=shm_read, progress=step)

        rel = ratios(rows)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        t = Table(title=f"Publish-to-read latency, {iterations} frames each "
                        f"(load average {load:.2f} on {os.cpu_count()} CPUs)")
        t.caption = "x p50, x p99: mp_queue latency divided by shm latency (higher: shm faster)"
        for col in ("channel", "bytes", "p50 us", "p90 us", "p99 us", "max us", "x p50", "x p99"):
            t.add_column(col, justify="left" if col == "channel" else "right")
        for r in rows:
            lat = r["latency_us"]
            label = r["channel"] + (f" ({r['read']})" if "read" in r else "")
            x50 = x99 = ""
            if r["channel"] == "shm" and r["bytes"] in rel:
                x50, x99 = f"{rel[r['bytes']]['p50']:.1f}x", f"{rel[r['bytes']]['p99']:.1f}x"
            t.add_row(label, f"{r['bytes']:,}", f"{lat['p50']:.1f}", f"{lat['p90']:.1f}",
                      f"{lat['p99']:.1f}", f"{lat['max']:.0f}", x50, x99)
        console.print(t)

        shm_frame = next((r for r in rows if r["channel"] == "shm" and r["bytes"] == _FRAME_BYTES), None)
        if shm_frame is not None and _FRAME_BYTES in rel:
            x = rel[_FRAME_BYTES]["p50"]
            p99 = shm_frame["latency_us"]["p99"]
            console.print(f"921,600 B: shm p50 is {x:.1f}x lower than mp.Queue (goal >= {_GOAL_RATIO:g}x: "
                          f"{'[green]met[/]' if x >= _GOAL_RATIO else '[red]not met[/]'}); shm p99 "
                          f"{p99:.0f} us (goal <= {_GOAL_P99_US:g} us on an idle machine: "
                          f"{'[green]met[/]' if p99 <= _GOAL_P99_US else '[yellow]not met[/]'})")
        png = plot_latency_distribution(samples, plot, title="Publish-to-read latency per channel",
                                        xlabel="latency (us)")
        console.print(f"plot: {png}")
        if json_path:
            write_json(json_path, rows)
            console.print(f"json: {json_path}")
