"""``python -m rtvla.robots.sim``: run the simulated robot and camera in real time and print
how well they keep up (real-time factor, lag, camera rate, render cost, state-read wait).

Options: ``--seconds S --width W --height H --rate HZ --no-depth --json PATH --png PATH``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from rtvla.errors import RtvlaError
from rtvla.robots.sim.bench import run_sim_bench


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtvla.robots.sim", description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--rate", type=float, default=30.0, help="camera rate (Hz)")
    p.add_argument("--no-depth", action="store_true", help="render RGB only")
    p.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--png", type=Path, default=None, help="save the last camera image here")
    args = p.parse_args(argv)
    console = Console()
    try:
        with Progress(console=console, transient=True) as prog:
            task = prog.add_task("simulating", total=1.0)
            figures, frame = run_sim_bench(
                args.seconds,
                width=args.width,
                height=args.height,
                rate_hz=args.rate,
                depth=not args.no_depth,
                progress=lambda f: prog.update(task, completed=f),
            )
    except RtvlaError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    table = Table(title=f"simulator, {figures['seconds']:.1f} s wall")
    table.add_column("figure")
    table.add_column("value", justify="right")
    ph, cam, rs = figures["physics"], figures["camera"], figures["read_state_us"]
    table.add_row("physics real-time factor", f"{ph['realtime_factor']:.3f}")
    table.add_row("physics lag (ms)", f"{ph['lag_ms']:.2f}")
    table.add_row(
        "dropped steps (startup)", f"{ph['dropped_steps']} ({ph['dropped_steps_startup']})"
    )
    table.add_row("mj_step + control (us)", f"{ph['step_us_mean']:.1f}")
    table.add_row(
        f"camera {cam['width']}x{cam['height']}{' + depth' if cam['depth'] else ''} (Hz)",
        f"{cam['achieved_hz']:.1f} / {cam['target_hz']:.0f}",
    )
    table.add_row("render (ms per frame)", f"{cam['render_ms_mean']:.1f}")
    table.add_row(
        "read_state wait p50 / p99 / max (us)",
        f"{rs['p50']:.0f} / {rs['p99']:.0f} / {rs['max']:.0f}",
    )
    console.print(table)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
        console.print(f"figures written to {args.json}")
    if args.png is not None and frame is not None:
        import cv2

        cv2.imwrite(str(args.png), frame.image[:, :, ::-1])
        console.print(f"camera image written to {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
