"""``rtvla bench policy``: chunk scheduling against a served policy, and the learned pick."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from rtvla.cli.common import console, fail, write_json

__all__ = ["register"]


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{what} must be comma-separated numbers, got {text!r}")
    if not values:
        fail(f"{what} must name at least one value, got {text!r}")
    return values


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _goals(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's goals for the rtvla scheduler at the largest delay, each met or not."""
    chunks = [r for r in rows if r.get("bench") == "chunks"]
    base = next((r for r in chunks if r["scheduler"] == "none"), None)
    mine = [r for r in chunks if r["scheduler"] == "rtvla"]
    if not mine:
        return []
    worst = max(mine, key=lambda r: r["delay_ms"])
    zero = min(mine, key=lambda r: r["delay_ms"])
    out = [f"rtvla at {worst['delay_ms']:g} ms: {worst['starved_ticks']} starved ticks (goal 0), "
           f"{worst['control_missed']} control misses (goal 0)"]
    if base is not None:
        ok = worst["lateness_us"]["p99"] <= 2 * base["lateness_us"]["p99"]
        out.append(f"lateness p99 {worst['lateness_us']['p99']:.0f} us vs no policy "
                   f"{base['lateness_us']['p99']:.0f} us (goal <= 2x): {'met' if ok else 'not met'}")
    if zero is not worst:
        j0, j1 = zero["boundary_jump_rad"]["max"], worst["boundary_jump_rad"]["max"]
        ok = j1 <= 2 * j0 if j0 > 0 else j1 == 0
        out.append(f"boundary jump max {j1:.4f} rad at {worst['delay_ms']:g} ms vs {j0:.4f} rad at "
                   f"{zero['delay_ms']:g} ms (goal <= 2x): {'met' if ok else 'not met'}")
    return out


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @bench.command("policy")
    def policy(
        episodes: int = typer.Option(20, "--episodes", help="pick episodes per controller"),
        seed0: int | None = typer.Option(None, "--seed0", help="first placement seed of the pick rows"),
        seconds: float = typer.Option(10.0, "--seconds", help="length of each chunks run"),
        delays: str = typer.Option("0,100,300", "--delays", help="server-side delays in ms"),
        schedulers: str = typer.Option("rtvla,sync", "--schedulers", help="rtvla, sync"),
        source: str | None = typer.Option(None, "--policy",
                                          help="ONNX file or builtin:NAME to serve (default builtin:pick)"),
        skip_pick: bool = typer.Option(False, "--skip-pick", help="only the chunks rows"),
        skip_chunks: bool = typer.Option(False, "--skip-chunks", help="only the pick rows"),
        json_path: Path | None = typer.Option(None, "--json", help="write the rows as JSON"),
    ) -> None:
        """Chunk scheduling inside the control process against a policy served by
        `rtvla serve-policy` on 127.0.0.1 with 0/100/300 ms of added server delay (rtvla's
        scheduler vs openpi's synchronous broker, and a no-policy baseline in the same run),
        and the learned pick against the scripted one."""
        from rtvla.bench.policy import bench_policy
        from rtvla.errors import ConfigError, PolicyError

        if episodes < 1:
            fail(f"--episodes must be >= 1, got {episodes}")
        if not seconds > 0:
            fail(f"--seconds must be > 0, got {seconds}")
        delay_list = _floats(delays, "--delays")
        sched_list = [s.strip() for s in schedulers.split(",") if s.strip()]
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            job = bar.add_task("starting", total=None)

            def progress(label: str) -> None:
                bar.update(job, description=label)

            try:
                result = bench_policy(episodes, seed0=seed0, chunks=not skip_chunks, pick=not skip_pick,
                                      progress=progress, delays_ms=delay_list, schedulers=sched_list,
                                      seconds=seconds, source=source)
            except (ConfigError, PolicyError) as exc:
                fail(str(exc))
        rows = result["rows"]
        picks = [r for r in rows if r.get("bench") == "pick"]
        if picks:
            t = Table(title="Pick: learned policy vs scripted, same placements")
            for col in ("controller", "episodes", "success rate", "median time s"):
                t.add_column(col, justify="right")
            for r in picks:
                t.add_row(str(r["controller"]), str(r["episodes"]), f"{r['success_rate']:.0%}",
                          _fmt(r.get("median_time_s"), 2))
            console.print(t)
        for note in result["notes"]:
            console.print(f"[yellow]pick rows:[/] {note}")
        chunks = [r for r in rows if r.get("bench") == "chunks"]
        if chunks:
            policy_name = next((r["policy"] for r in chunks if r.get("policy")), "-")
            t = Table(title=f"Chunks at 100 Hz: {policy_name} served on 127.0.0.1")
            for col in ("scheduler", "delay ms", "starved", "missed", "lateness p50/p99/max us",
                        "jump p50/max rad", "step avg us", "chunks", "s"):
                t.add_column(col, justify="right")
            for r in chunks:
                lat, jump = r["lateness_us"], r["boundary_jump_rad"]
                t.add_row(r["scheduler"], _fmt(r["delay_ms"]), str(r["starved_ticks"]), str(r["control_missed"]),
                          f"{_fmt(lat['p50'])}/{_fmt(lat['p99'])}/{_fmt(lat['max'])}",
                          f"{jump['p50']:.4f}/{jump['max']:.4f}", _fmt(r["step_us"]["avg"]),
                          str(r.get("chunks", "-")),
                          f"{r['duration_s']:.1f}")
            console.print(t)
            for line in _goals(rows):
                console.print(line)
            console.print("[dim]timings from this machine; on a shared or noisy one, compare rows of the "
                          "same run only[/]")
        if json_path:
            write_json(json_path, result)
