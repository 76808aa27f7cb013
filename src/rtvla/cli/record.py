"""``rtvla record`` (LeRobot datasets from simulated demonstrations) and ``rtvla bench recording``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rtvla.cli.common import console, fail, stage_progress, write_json

__all__ = ["register"]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @app.command("record")
    def record(
        episodes: int = typer.Option(..., "--episodes", min=1, help="how many attempts of the task to run"),
        task: str = typer.Option(..., "--task", help='the instruction, e.g. "put the red cube in the blue bin"'),
        out: Path = typer.Option(..., "--out", help="dataset folder (created, or appended to)"),
        fps: int = typer.Option(30, "--fps", min=1, max=100, help="dataset frame rate"),
        seed: int = typer.Option(0, "--seed", help="object placements are drawn from (seed, episode)"),
        keep_failures: bool = typer.Option(False, "--keep-failures", help="also keep failed episodes"),
        timeout: float = typer.Option(120.0, "--timeout", min=1.0, help="simulated seconds per episode"),
        json_path: Path | None = typer.Option(None, "--json", help="write the summary as JSON"),
    ) -> None:
        """Run the task N times on the simulator (lock-step) and write a LeRobot v3.0 dataset."""
        from rtvla.errors import RtvlaError
        from rtvla.record.episodes import record_episodes

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            job = bar.add_task("starting", total=episodes)
            kept = {"n": 0, "i": 0}

            def on_episode(i: int, outcome: object) -> None:
                kept["i"] = i
                if outcome is None:
                    bar.update(job, description=f"episode {i + 1}/{episodes} (kept {kept['n']})")
                    return
                kept["n"] += bool(getattr(outcome, "kept", False))
                bar.advance(job)

            def on_second(sim_s: float) -> None:
                bar.update(job, description=f"episode {kept['i'] + 1}/{episodes}: {sim_s:.0f} s simulated "
                                            f"(kept {kept['n']})")

            try:
                summary = record_episodes(out, task, episodes=episodes, fps=fps, seed=seed,
                                          keep_failures=keep_failures, timeout_s=timeout,
                                          progress=on_episode, on_second=on_second)
            except RtvlaError as exc:
                fail(f"{type(exc).__name__}: {exc}")
        t = Table(title=f"rtvla record: {task!r} -> {out}")
        for col in ("episode", "result", "kept", "frames", "sim s", "wall s", "reason"):
            t.add_column(col, justify="left" if col in ("result", "reason") else "right", overflow="fold")
        for e in summary["episodes"]:
            t.add_row(str(e["index"]), "[green]success[/]" if e["success"] else "[red]failed[/]",
                      "yes" if e["kept"] else "no", str(e["frames"]), f"{e['sim_time_s']:.1f}",
                      f"{e['wall_s']:.1f}", e["reason"] or "-")
        console.print(t)
        info = summary["info"]
        console.print(f"dataset {out}: {info['total_episodes']} episodes, {info['total_frames']} frames "
                      f"at {info['fps']} fps ({summary['kept']} kept of {len(summary['episodes'])} this run)")
        if json_path:
            write_json(json_path, summary)
            console.print(f"json: {json_path}")
        if summary["kept"] == 0:
            raise typer.Exit(1)

    @bench.command("recording")
    def recording(
        seconds: float = typer.Option(20.0, min=2.0, help="seconds per configuration"),
        repeats: int = typer.Option(1, min=1, help="off/on pairs (more give the noise between runs)"),
        out_dir: Path = typer.Option(Path("rtvla-bench/recording"), "--out", help="where the recordings go"),
        workload: str = typer.Option("stack", help="stack: the default rtvla run stack (control in its own "
                                                   "process); sim: sim + camera + control loop in a thread"),
        json_path: Path | None = typer.Option(None, "--json", help="write the figures as JSON"),
    ) -> None:
        """Cost of recording (run.mcap + episode.mp4) vs the same run without it."""
        from rtvla.bench.recording import bench_recording
        from rtvla.errors import RtvlaError

        with stage_progress(2 * repeats, lambda label: f"{label} for {seconds:g} s") as step:
            try:
                res = bench_recording(seconds=seconds, repeats=repeats, directory=out_dir, progress=step,
                                      workload=workload)
            except (RtvlaError, ValueError) as exc:
                fail(f"{type(exc).__name__}: {exc}")
        what = ("the default stack, idle: control process, camera + perception 30 Hz, navigation"
                if workload == "stack" else "sim + camera 30 Hz + control loop 100 Hz in a thread")
        t = Table(title=f"Recording cost ({what}; {seconds:g} s per row)")
        for col in ("recording", "process CPU %", "recorder threads CPU %", "MB/s written",
                    "control late p50 us", "control late p99 us", "missed"):
            t.add_column(col, justify="right")
        for r in res["rows"]:
            t.add_row("on" if r["recording"] else "off (baseline)", f"{r['cpu_percent']:.1f}",
                      f"{r['recorder_threads_cpu_percent']:.1f}", f"{r['mb_per_s']:.3f}",
                      f"{r['lateness_p50_us']:.0f}", f"{r['lateness_p99_us']:.0f}", str(r["missed"]))
        console.print(t)
        s = res["summary"]
        parts = [r.get("cost_breakdown_cpu_percent") for r in res["rows"] if r["recording"]]
        if parts and parts[0]:
            console.print("recorder threads, % of one core: " + ", ".join(
                f"{k} {sum(p[k] for p in parts) / len(parts):.1f}" for k in parts[0]))
        style = "green" if s["within_goal"] else "yellow"
        console.print(f"[{style}]recording costs {s['recorder_threads_cpu_percent']:.1f} % of one core in its "
                      f"own threads ({s['cost_cpu_percent']:+.1f} % process CPU vs off; goal <= 5 %), "
                      f"{s['mb_per_s']:.3f} MB/s; control lateness p99 {s['lateness_p99_us_on']:.0f} us on vs "
                      f"{s['lateness_p99_us_off']:.0f} us off[/]")
        if json_path:
            write_json(json_path, res)
            console.print(f"json: {json_path}")
