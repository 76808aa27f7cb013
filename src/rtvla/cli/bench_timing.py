"""``rtvla bench loop`` and ``rtvla bench record``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from rtvla.cli.common import console, stage_progress, write_json

__all__ = ["register"]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @bench.command("loop")
    def loop(
        seconds: float = typer.Option(10.0, help="seconds per configuration (the goals use 30)"),
        rates: str = typer.Option("100,1000", help="comma-separated rates in Hz"),
        loads: str = typer.Option("idle,loaded", help="idle, loaded or both"),
        json_path: Path | None = typer.Option(None, "--json", help="write the rows as JSON"),
        plot: Path = typer.Option(Path("rtvla-bench/loop.png"), help="lateness histogram PNG"),
        realtime: bool = typer.Option(True, "--realtime/--no-realtime",
                                      help="run rtvla's loops under SCHED_FIFO where permitted"),
    ) -> None:
        """Naive sleep loop vs RateLoop (sleep) vs RateLoop (sleep-then-spin), idle and loaded."""
        from rtvla.bench.timing import LOOP_KINDS, bench_loop
        from rtvla.metrics.plots import plot_latency_distribution

        rate_list = tuple(float(r) for r in rates.split(",") if r.strip())
        load_list = tuple(x.strip() for x in loads.split(",") if x.strip())
        total = len(rate_list) * len(load_list) * len(LOOP_KINDS)
        with stage_progress(total, lambda label: f"running {label} for {seconds:g} s") as step:
            rows, samples = bench_loop(seconds=seconds, rates=rate_list, loads=load_list, progress=step,
                                       realtime=realtime)
        t = Table(title=f"Loop timing ({seconds:g} s per row)")
        for col in ("loop", "rate Hz", "load", "achieved Hz", "rate err %", "late p50 us",
                    "late p99 us", "late max us", "drift ms", "missed", "scheduler"):
            t.add_column(col, justify="left" if col in ("loop", "load") else "right")
        for r in rows:
            lat = r["lateness_us"]
            t.add_row(r["loop"], f"{r['rate_hz']:g}", r["load"], f"{r['achieved_hz']:.3f}",
                      f"{r['rate_error_pct']:.4f}", f"{lat['p50']:.1f}", f"{lat['p99']:.1f}",
                      f"{lat['max']:.0f}", f"{r['drift_ms']:.3f}", str(r["missed"]),
                      r["scheduler"].replace("refused: ", "refused ")[:24])
        console.print(t)
        by = {(r["loop"], r["rate_hz"], r["load"]): r for r in rows}
        for (kind, rate, load), r in by.items():
            naive = by.get(("naive", rate, load))
            if kind != "naive" and naive and r["rate_error_pct"] > 0:
                console.print(f"{kind} {rate:g} Hz {load}: rate error {naive['rate_error_pct'] / r['rate_error_pct']:.0f}x "
                              f"smaller than naive, drift {r['drift_ms']:.3f} ms vs {naive['drift_ms']:.1f} ms")
        png = plot_latency_distribution(samples, plot, title="Wake-up lateness per loop")
        console.print(f"plot: {png}")
        if json_path:
            write_json(json_path, rows)
            console.print(f"json: {json_path}")

    @bench.command("record")
    def record(
        samples: int = typer.Option(10_000_000, help="samples for the memory comparison"),
        json_path: Path | None = typer.Option(None, "--json", help="write the figures as JSON"),
    ) -> None:
        """Cost of Recorder.latency() and its memory after many samples, vs a list append."""
        from rtvla.bench.timing import bench_record

        with console.status(f"recording {samples:,} samples into each..."):
            res = bench_record(samples=samples)
        t = Table(title="Recorder.latency() vs the reference's list append")
        t.add_column("")
        t.add_column("rtvla Recorder", justify="right")
        t.add_column("list append (reference)", justify="right")
        t.add_row("median ns per call", f"{res['record_ns_median']:.0f}", f"{res['baseline_ns_median']:.0f}")
        t.add_row(f"memory after {samples:,} samples", f"{res['memory_bytes_after_1e7'] / 1024:.1f} KiB",
                  f"{res['baseline_memory_bytes_after_1e7'] / 2**20:.1f} MiB")
        t.add_row("memory after 1,000 samples", f"{res['memory_bytes_after_1e3'] / 1024:.1f} KiB", "")
        console.print(t)
        console.print(f"memory ratio: {res['memory_ratio']:.0f}x smaller; the recorder also checks the "
                      "budget, keeps percentiles and rate-limits warnings in that time")
        if json_path:
            write_json(json_path, res)
