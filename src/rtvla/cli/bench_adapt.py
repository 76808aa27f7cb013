"""``rtvla bench adapt``: a CPU load step on the running stack, adaptation on vs off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rtvla.cli.common import console, fail, write_json

__all__ = ["register"]


def _fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @bench.command("adapt")
    def adapt(
        load_s: float = typer.Option(10.0, "--load-s", help="how long the CPU load lasts"),
        procs: int = typer.Option(2, "--procs", help="busy processes that make the load"),
        settle_s: float = typer.Option(5.0, "--settle-s", help="stack alone before the load"),
        recover_s: float = typer.Option(40.0, "--recover-s", help="longest wait for recovery after the load"),
        config: Path | None = typer.Option(None, "--config", "-c", help="rtvla.toml"),
        json_path: Path | None = typer.Option(None, "--json", help="write the result as JSON"),
        plot: Path | None = typer.Option(None, "--plot", help="PNG: level and perception rate over time"),
    ) -> None:
        """Run the stack with adaptation on, then off; in each, CPU load from --procs busy
        processes for --load-s seconds. Rows: control misses, perception rate during the load,
        highest quality level, recovery time; and the CPU per frame each quality level costs.
        Goals with adaptation on: 0 control misses, recovery <= 5 s, perception at or above its
        minimum rate during the load."""
        from rtvla.bench.adapt import bench_adapt, plot_adapt
        from rtvla.errors import ConfigError

        for name, value in (("--load-s", load_s), ("--settle-s", settle_s), ("--recover-s", recover_s)):
            if not value > 0:
                fail(f"{name} must be > 0, got {value}")
        if procs < 1:
            fail(f"--procs must be >= 1, got {procs}")
        per_run = settle_s + load_s + recover_s
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            job = bar.add_task("starting the stack", total=per_run)

            def progress(label: str, done_s: float) -> None:
                bar.update(job, completed=min(done_s, per_run), description=label)

            try:
                result = bench_adapt(load_s=load_s, procs=procs, settle_s=settle_s, recover_s=recover_s,
                                     config=config, progress=progress)
            except ConfigError as exc:
                fail(str(exc))
        t = Table(title=f"Load step: {procs} busy processes for {load_s:g} s")
        for col in ("adaptation", "control missed", "perception Hz (load)", "nominal Hz", "min Hz",
                    "level before", "level max", "recovery s", "load CPU s"):
            t.add_column(col, justify="right")
        for r in result["rows"]:
            t.add_row(r["adaptation"], str(r["control_missed"]), f"{r['perception_hz_during_load']:.1f}",
                      f"{r['perception_hz_nominal']:.1f}", f"{r['perception_min_hz']:g}",
                      str(r["level_before_load"]), str(r["level_max"]),
                      _fmt(r["recovery_s"], ".1f") if r["recovery_s"] is not None
                      else f"> {r['recover_window_s']:g}", f"{r['load']['cpu_s']:.1f}")
        console.print(t)
        costs = result["knob_costs"]
        if costs:
            c = Table(title="CPU per frame at each quality level (ms)")
            cols = ["level", "processing at", "camera renders", "process", "camera render", "total"]
            if "render_cpu_ms_if_camera_at_resolution" in costs[0]:
                cols.append("render if camera at that size")
            for col in cols:
                c.add_column(col, justify="right")
            for k in costs:
                cells = [str(k["level"]), "x".join(map(str, k["resolution"])),
                         "x".join(map(str, k["camera_size"])), f"{k['process_cpu_ms']:.2f}",
                         _fmt(k["render_cpu_ms"], ".2f"), _fmt(k["total_cpu_ms"], ".2f")]
                if "render_cpu_ms_if_camera_at_resolution" in k:
                    cells.append(_fmt(k["render_cpu_ms_if_camera_at_resolution"], ".2f"))
                c.add_row(*cells)
            console.print(c)
            s = result["knob_cost_summary"] or {}
            if s.get("total_cpu_cut") is not None:
                console.print(f"lowest level vs full quality: {s['total_cpu_cut']:.0%} less CPU per frame "
                              f"(processing {_fmt(s['process_cpu_cut'], '.0%')}, "
                              f"render {_fmt(s['render_cpu_cut'], '.0%')}; a camera that can follow "
                              "the knob, like the simulator's, renders at the level's size)")
            if s.get("total_cpu_cut_if_camera_followed") is not None:
                console.print(f"rendering alone at each level's size (measured apart): "
                              f"{s['total_cpu_cut_if_camera_followed']:.0%} less at the lowest level")
        on = next((r for r in result["rows"] if r["adaptation"] == "on"), None)
        if on is not None:
            goals = [on["control_missed"] == 0, on["recovery_s"] is not None and on["recovery_s"] <= 5.0,
                     on["perception_hz_during_load"] >= on["perception_min_hz"]]
            console.print("goals met" if all(goals) else "[yellow]goals not met[/] (see the rows)")
        if json_path:
            console.print(f"json: {write_json(json_path, result)}")
        if plot:
            console.print(f"plot: {plot_adapt(result, plot)}")
