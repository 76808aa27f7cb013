"""``rtvla bench control``: 100 Hz control-loop lateness under load, thread vs process, chunks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from rtvla.cli.common import console, fail, stage_progress, write_json

__all__ = ["register"]

_PLACEMENTS = ("thread", "process", "chunks")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @bench.command("control")
    def control(
        seconds: float = typer.Option(30.0, help="seconds per placement (the goals use 30)"),
        placements: str = typer.Option(",".join(_PLACEMENTS), help="comma-separated: thread, process, chunks"),
        rate: float = typer.Option(100.0, help="control rate in Hz"),
        robot: str = typer.Option("auto", help="auto (SimRobot if available), sim or kinematic"),
        json_path: Path | None = typer.Option(None, "--json", help="write the rows as JSON"),
        plot: Path = typer.Option(Path("rtvla-bench/control.png"), help="lateness histogram PNG"),
    ) -> None:
        """Control-loop lateness and missed cycles at 100 Hz while perception (OpenCV, 30 Hz),
        navigation (numpy, 10 Hz) and a busy process run: in a thread, in its own process,
        and following action chunks from a 5 Hz policy."""
        from rtvla.bench.control import bench_control, choose_robot
        from rtvla.errors import ConfigError
        from rtvla.metrics.plots import plot_latency_distribution

        chosen = tuple(p.strip() for p in placements.split(",") if p.strip())
        bad = [p for p in chosen if p not in _PLACEMENTS]
        if bad or not chosen:
            fail(f"--placements: unknown placement {bad[0] if bad else placements!r}; "
                 f"choose from {', '.join(_PLACEMENTS)}")
        if not seconds > 0:
            fail(f"--seconds must be > 0, got {seconds}")
        try:
            choice = choose_robot(robot)
        except ConfigError as exc:
            fail(str(exc))
        console.print(f"robot: {choice.label}")
        with stage_progress(len(chosen), lambda label: f"control loop in {label} for {seconds:g} s under load") as step:
            try:
                rows, samples = bench_control(seconds, rate_hz=rate, placements=chosen, robot=choice,
                                             progress=step)
            except ConfigError as exc:
                fail(str(exc))

        t = Table(title=f"Control loop at {rate:g} Hz under load ({seconds:g} s per row)")
        for col in ("placement", "late p50 us", "late p99 us", "late max us", "missed",
                    "starved", "achieved Hz", "watchdog", "VM steal s"):
            t.add_column(col, justify="left" if col == "placement" else "right")
        notes_out: list[str] = []
        for r in rows:
            lat = r["lateness_us"]
            notes = []
            if r["placement"] == "process":
                rt = r.get("realtime") or {}
                notes.append("; ".join(f"{k}: {v}" for k, v in rt.items()))
            if r["placement"] == "chunks":
                notes.append(f"policy {r['policy_hz']:.1f} Hz, delay max "
                             f"{r['inference_delay_ticks']['max']} ticks "
                             f"({r['inference_delay_ms']['max']:.0f} ms)")
            bg = r.get("background", {})
            notes.append("bg " + ", ".join(f"{k} {v:g} Hz" for k, v in bg.items()))
            t.add_row(r["placement"], f"{lat['p50']:.1f}", f"{lat['p99']:.1f}", f"{lat['max']:.0f}",
                      str(r["missed"]), str(r["starved_ticks"]), f"{r['achieved_hz']:.2f}",
                      str(r["watchdog_trips"]), f"{r.get('steal_s', 0.0):.2f}")
            notes_out.append(f"{r['placement']}: " + "; ".join(n for n in notes if n))
        console.print(t)
        for line in notes_out:
            console.print(line)
        if rows:
            console.print(f"robot: {rows[0]['robot']}; background: OpenCV 640x480 at 30 Hz, numpy "
                          "rollouts at 10 Hz, one busy process")
        png = plot_latency_distribution(samples, plot, title=f"Control-loop wake-up lateness at {rate:g} Hz")
        console.print(f"plot: {png}")
        if json_path:
            write_json(json_path, rows)
            console.print(f"json: {json_path}")
