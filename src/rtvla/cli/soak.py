"""``rtvla bench soak``: tasks back to back on one stack; memory, threads, files, misses."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rtvla.cli.common import console, fail, write_json

__all__ = ["register"]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @bench.command("soak")
    def soak(
        minutes: float = typer.Option(10.0, "--minutes", help="how long to keep running tasks"),
        config: Path | None = typer.Option(None, "--config", "-c", help="rtvla.toml"),
        json_path: Path | None = typer.Option(None, "--json", help="write the result as JSON"),
    ) -> None:
        """The whole stack runs tasks back to back (reset between tasks): RSS growth after the
        first task (goal <= 2 MB), control misses over all tasks (goal 0), threads and open
        files before the first and after the last task (goal equal)."""
        from rtvla.bench.soak import bench_soak
        from rtvla.errors import ConfigError

        if not minutes > 0:
            fail(f"--minutes must be > 0, got {minutes}")
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            job = bar.add_task("first task", total=minutes * 60.0)

            def progress(done: int, elapsed: float, last: dict) -> None:
                ok = "ok" if last["success"] else "FAILED"
                bar.update(job, completed=min(elapsed, minutes * 60.0),
                           description=f"{done} tasks; last {ok} in {last['duration_s']} s")

            try:
                row = bench_soak(minutes, config=config, progress=progress)
            except ConfigError as exc:
                fail(str(exc))
        t = Table(title=f"Soak: {row['tasks']} tasks in {row['minutes']} min")
        for col in ("tasks", "succeeded", "RSS growth MB", "control missed", "threads", "open files"):
            t.add_column(col, justify="right")
        t.add_row(str(row["tasks"]), str(row["succeeded"]), f"{row['rss_growth_mb']:.2f}",
                  str(row["control_missed"]), f"{row['threads']['before']} -> {row['threads']['after']}",
                  f"{row['open_files']['before']} -> {row['open_files']['after']}")
        console.print(t)
        goals = [row["rss_growth_mb"] <= 2.0, row["control_missed"] == 0,
                 row["threads"]["before"] == row["threads"]["after"],
                 row["open_files"]["before"] == row["open_files"]["after"]]
        console.print("goals met" if all(goals) else "[yellow]goals not met[/] (see the row)")
        if json_path:
            write_json(json_path, row)
