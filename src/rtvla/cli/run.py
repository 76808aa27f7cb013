"""``rtvla run`` (the main job) and ``rtvla report RUN``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import typer

from rtvla.cli.common import console, fail, write_json

__all__ = ["register"]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @app.command("run")
    def run(
        task: str | None = typer.Option(None, "--task", "-t",
                                        help='instruction (default: "put the red cube in the blue bin")'),
        duration: float | None = typer.Option(None, "--duration", help="time limit in seconds (default: the task budget, 120 s)"),
        llm_url: str | None = typer.Option(None, "--llm-url", help="OpenAI-compatible /v1 URL (vLLM, llama.cpp, Ollama)"),
        model: str | None = typer.Option(None, "--model", help="model name on that server"),
        config: Path | None = typer.Option(None, "--config", "-c", help="rtvla.toml"),
        out: Path | None = typer.Option(None, "--out", help="run folder (default: runs/<time>-<task>)"),
        no_dashboard: bool = typer.Option(False, "--no-dashboard", help="no live terminal view"),
        json_path: Path | None = typer.Option(None, "--json", help="also copy report.json here"),
        inject: str | None = typer.Option(
            None, "--inject", help="faults to inject, FAULT@SECONDS[,...]: control-kill, control-hang, "
            "perception-crash, detector-hang, camera-drop, llm-hang, llm-garbage, disk-full"),
    ) -> None:
        """Carry out a natural-language task on the simulated robot, on time, and report.

        Exit code 0: the task succeeded within its deadline and every critical budget was met;
        1: the task failed or was late; 3: critical budgets violated; 4: the stack could not
        run; 130: interrupted. The run folder holds report.json, metrics.jsonl, plots, run.log.
        """
        from rtvla.config import load_config
        from rtvla.errors import ConfigError, PartError
        from rtvla.metrics import render_table
        from rtvla.runtime.dashboard import Dashboard
        from rtvla.runtime.faults import parse_faults
        from rtvla.runtime.main_job import RunOptions, run_task
        from rtvla.runtime.settings import validate_sections

        try:
            cfg = load_config(config)
            validate_sections(cfg)
            parse_faults(inject)
        except PartError as exc:  # the stack cannot be built: exit 4, before anything starts
            fail(str(exc), code=4)
        except ConfigError as exc:
            fail(str(exc))
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            if stop.is_set():  # a second Ctrl-C: stop waiting politely
                raise KeyboardInterrupt
            console.print(f"[yellow]{signal.Signals(signum).name}: stopping the robot and writing the report...[/]")
            stop.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        dash = None
        if not no_dashboard and console.is_terminal:
            def dash(stack: Any, state: Any) -> Dashboard:
                return Dashboard(stack.recorder.snapshot, state, console=console,
                                 refresh_hz=stack.settings.dashboard_hz)
        try:
            outcome = run_task(cfg, RunOptions(task=task, duration_s=duration, llm_url=llm_url,
                                               model=model, out_dir=out, dashboard=not no_dashboard,
                                               inject=inject),
                               stop_event=stop, dashboard_factory=dash)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        report = outcome.report
        console.print(render_table(report, title=f"rtvla run: {report['task']['instruction']}"))
        t = report["task"]
        console.print(f"plan source: {t['plan_source']}"
                      + (f" (degraded: {t['degraded_reason']})" if t.get("degraded_reason") else ""))
        if report.get("adaptation"):
            console.print(f"adaptation: {len(report['adaptation'])} level changes")
        for f in report.get("faults", []):
            console.print(f"fault {f['fault']}@{f['at_s']:g}s (injected at {f['injected_at_s']} s): "
                          f"{f.get('outcome')}")
        if report.get("degradations"):
            console.print(f"degradations/faults: {len(report['degradations'])} (see report.json)")
        style = "green" if outcome.exit_code == 0 else "red"
        console.print(f"[{style}]exit {outcome.exit_code}: {outcome.reason}[/]")
        console.print(f"run folder: {outcome.run_dir}")
        if json_path:
            write_json(json_path, report)
        raise typer.Exit(outcome.exit_code)

    @app.command("report")
    def report_cmd(
        run_dir: Path = typer.Argument(..., help="a run folder written by `rtvla run`"),
        json_out: bool = typer.Option(False, "--json", help="print report.json instead of the table"),
        no_plots: bool = typer.Option(False, "--no-plots", help="do not re-render the PNG plots"),
    ) -> None:
        """Render the table and plots of a finished run again."""
        import json

        from rtvla.errors import RuntimeStackError
        from rtvla.metrics import render_table
        from rtvla.runtime.run_dir import RunDir, load_run

        try:
            report = load_run(run_dir)
        except RuntimeStackError as exc:
            fail(str(exc))
        if json_out:
            console.print_json(json.dumps(report))
            return
        console.print(render_table(report, title=f"run {run_dir}"))
        task = report.get("task", {})
        console.print(f"task: {task.get('instruction')!r} success={task.get('success')} "
                      f"duration={task.get('duration_s')} s plan={task.get('plan_source')}")
        ex = report.get("exit", {})
        console.print(f"exit {ex.get('code')}: {ex.get('reason')}")
        if not no_plots:
            paths = RunDir(Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent).write_plots(report)
            for p in paths:
                console.print(f"plot: {p}")
