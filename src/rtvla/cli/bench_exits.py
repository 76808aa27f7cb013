"""``rtvla bench exits``: the time each way out of ``rtvla run`` takes (Ctrl-C, SIGTERM, kill -9)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rtvla.cli.common import console, fail, write_json

__all__ = ["register"]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @bench.command("exits")
    def exits(
        cases: str = typer.Option("ctrl-c,sigterm,kill-control,kill-parent", "--cases",
                                  help="comma-separated: ctrl-c, sigterm, kill-control, kill-parent"),
        repeats: int = typer.Option(3, "--repeats", help="runs per case"),
        json_path: Path | None = typer.Option(None, "--json", help="write the rows as JSON"),
    ) -> None:
        """Start `rtvla run` on a pseudo-terminal in its own process group, wait until the task
        executes, then end it the way a user does: Ctrl-C (SIGINT to the whole group), SIGTERM
        to the parent, kill -9 of the control process, kill -9 of the parent. Prints the time
        to exit, the exit code, whether report.json is complete and any process left behind."""
        from rtvla.bench.exits import CASES, RunNotReady, bench_exits

        names = [c.strip() for c in cases.split(",") if c.strip()]
        bad = [c for c in names if c not in CASES]
        if not names or bad:
            fail(f"--cases: unknown {', '.join(bad) or '(none given)'}; known: {', '.join(CASES)}")
        if repeats < 1:
            fail(f"--repeats must be >= 1, got {repeats}")
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            job = bar.add_task("starting", total=len(names) * repeats)

            def progress(case: str, i: int, row: dict) -> None:
                bar.update(job, advance=1, description=f"{case} #{i + 1}: {row['stop_s']} s")

            try:
                rows = bench_exits(names, repeats=repeats, progress=progress)
            except RunNotReady as exc:
                fail(f"rtvla run did not behave: {exc}")
        t = Table(title="Ways out of rtvla run (time from the signal to the exit)")
        for col, just in (("case", "left"), ("signal", "left"), ("stop s", "right"), ("exit", "right"),
                          ("report complete", "right"), ("left behind", "right")):
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        for r in rows:
            t.add_row(r["case"], r["signal"], "-" if r["stop_s"] is None else f"{r['stop_s']:.2f}",
                      str(r["exit_code"]), "-" if r["report_complete"] is None else str(r["report_complete"]),
                      str(r["left_behind"]))
        console.print(t)
        console.print("kill-parent: no report can be written; the time is the orphaned control "
                      "process stopping the robot and exiting by itself.")
        if json_path:
            write_json(json_path, {"rows": rows})
