"""``rtvla bench channels``: one-way publish-to-read latency per transport, side by side.

In-process, shared memory (the seqlock), iceoryx2, Zenoh over 127.0.0.1 and
``multiprocessing.Queue`` (the baseline), for each payload size, in one run.
"""

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
_BASELINE = "mp_queue"


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @bench.command("channels")
    def channels(
        iterations: int = typer.Option(1000, "--iterations", "-n", help="measured frames per channel and size"),
        warmup: int = typer.Option(50, help="frames sent first and not measured"),
        payloads: str = typer.Option("64,921600", help="comma-separated payload sizes in bytes"),
        transports: str = typer.Option(
            "all", help="comma-separated transports: inproc, shm, iceoryx2, zenoh, mp_queue "
                        "('all': every one whose package is installed)"),
        shm_read: str = typer.Option("copy", help="how the shm and iceoryx2 readers take a frame: "
                                                  "copy, out (preallocated) or view"),
        gap_ms: float = typer.Option(1.0, help="pause between frames, so each read includes a wake-up"),
        json_path: Path | None = typer.Option(None, "--json", help="write the rows as JSON"),
        plot: Path = typer.Option(Path("rtvla-bench/channels.png"), help="latency histogram PNG"),
    ) -> None:
        """One-way latency p50/p99: LatestValue, SharedArrayChannel, iceoryx2, Zenoh, mp.Queue."""
        from rtvla.bench.channels import CHANNEL_KINDS, SHM_READS, available_kinds, bench_channels
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
        if transports.strip() == "all":
            kinds = available_kinds()
            skipped = [k for k in CHANNEL_KINDS if k not in kinds]
            if skipped:
                console.print(f"[yellow]skipped (package not installed):[/] {', '.join(skipped)}")
        else:
            kinds = tuple(t.strip() for t in transports.split(",") if t.strip())
            unknown = [k for k in kinds if k not in CHANNEL_KINDS]
            if unknown or not kinds:
                fail(f"--transports must list some of {', '.join(CHANNEL_KINDS)} (or 'all'), "
                     f"got {transports!r}")
            missing = [k for k in kinds if k not in available_kinds(kinds)]
            if missing:
                fail(f"--transports {', '.join(missing)}: package not installed "
                     "(pip install 'rtvla[zenoh,iceoryx2]')")

        total = len(sizes) * len(kinds)
        with stage_progress(total, lambda label: f"{label}: {iterations + warmup} frames") as step:
            rows, samples = bench_channels(iterations=iterations, warmup=warmup, payloads=sizes,
                                           kinds=kinds, gap_s=gap_ms / 1e3, shm_read=shm_read,
                                           progress=step)

        by = {(r["channel"], r["bytes"]): r["latency_us"] for r in rows}
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        t = Table(title=f"One-way publish-to-read latency, {iterations} frames each "
                        f"(load average {load:.2f} on {os.cpu_count()} CPUs)")
        t.caption = (f"x p50, x p99: {_BASELINE} latency divided by the row's (higher: faster than "
                     f"{_BASELINE}); every reader is another process but inproc's, on this host "
                     "(zenoh rows: stamps corrected by the estimated clock offset, as across hosts)")
        for col in ("channel", "bytes", "p50 us", "p90 us", "p99 us", "max us", "x p50", "x p99"):
            t.add_column(col, justify="left" if col == "channel" else "right")
        for r in rows:
            lat = r["latency_us"]
            label = r["channel"] + (f" ({r['read']})" if "read" in r else "")
            x50 = x99 = ""
            base = by.get((_BASELINE, r["bytes"]))
            if base is not None and r["channel"] != _BASELINE:
                x50 = f"{base['p50'] / lat['p50']:.1f}x" if lat["p50"] > 0 else "inf"
                x99 = f"{base['p99'] / lat['p99']:.1f}x" if lat["p99"] > 0 else "inf"
            t.add_row(label, f"{r['bytes']:,}", f"{lat['p50']:.1f}", f"{lat['p90']:.1f}",
                      f"{lat['p99']:.1f}", f"{lat['max']:.0f}", x50, x99)
        console.print(t)
        for r in rows:
            if r.get("clock"):
                c = r["clock"]
                console.print(f"zenoh {r['bytes']:,} B: clock-corrected; offset estimate {c['offset_us']:+.1f} us "
                              f"± {c['uncertainty_us']:.1f} us over {c['pings']} pings (true offset 0 here)")

        shm_frame = by.get(("shm", _FRAME_BYTES))
        base_frame = by.get((_BASELINE, _FRAME_BYTES))
        if shm_frame is not None and base_frame is not None:
            x = base_frame["p50"] / shm_frame["p50"]
            p99 = shm_frame["p99"]
            console.print(f"921,600 B: shm p50 is {x:.1f}x lower than mp.Queue (goal >= {_GOAL_RATIO:g}x: "
                          f"{'[green]met[/]' if x >= _GOAL_RATIO else '[red]not met[/]'}); shm p99 "
                          f"{p99:.0f} us (goal <= {_GOAL_P99_US:g} us on an idle machine: "
                          f"{'[green]met[/]' if p99 <= _GOAL_P99_US else '[yellow]not met[/]'})")
        for nbytes in sizes:
            shm, iox = by.get(("shm", nbytes)), by.get(("iceoryx2", nbytes))
            if shm is not None and iox is not None:
                console.print(f"{nbytes:,} B: iceoryx2 / shm latency p50 {iox['p50'] / shm['p50']:.2f}, "
                              f"p99 {iox['p99'] / shm['p99']:.2f} (below 1: iceoryx2 faster)")
        png = plot_latency_distribution(samples, plot, title="One-way publish-to-read latency per channel",
                                        xlabel="latency (us)")
        console.print(f"plot: {png}")
        if json_path:
            write_json(json_path, rows)
            console.print(f"json: {json_path}")
