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
        no_record: bool = typer.Option(False, "--no-record", help="write neither run.mcap nor episode.mp4"),
        live: bool = typer.Option(False, "--live", help="serve the run live to Foxglove over WebSocket "
                                  "(Open connection -> Foxglove WebSocket)"),
        live_port: int | None = typer.Option(None, "--live-port", min=0, max=65535,
                                             help="the live view's port on 127.0.0.1 (default 8765; 0: any free)"),
        dataset: Path | None = typer.Option(None, "--dataset", help="append the run to this LeRobot v3.0 "
                                            "dataset as one episode (created when missing)"),
        keep_failures: bool = typer.Option(False, "--keep-failures",
                                           help="with --dataset: keep the episode when the task fails too"),
        policy: str | None = typer.Option(None, "--policy", help="run manipulate(pick ...) with a learned "
                                          "policy: builtin:pick or a pick-policy .onnx ([policy] source)"),
    ) -> None:
        """Carry out a natural-language task on the simulated robot, on time, and report.

        Exit code 0: the task succeeded within its deadline and every critical budget was met;
        1: the task failed or was late; 3: critical budgets violated; 4: the stack could not
        run; 130: interrupted. The run folder holds report.json, metrics.jsonl, plots, run.log,
        run.mcap (Foxglove, Rerun) and episode.mp4.
        """
        from rtvla.config import load_config
        from rtvla.errors import ConfigError, PartError, RecordError
        from rtvla.metrics import render_table
        from rtvla.record.capture import check_dataset_folder
        from rtvla.record.settings import RecordSettings
        from rtvla.runtime.dashboard import Dashboard
        from rtvla.runtime.faults import parse_faults
        from rtvla.runtime.main_job import RunOptions, run_task
        from rtvla.runtime.settings import validate_sections

        try:
            cfg = load_config(config)
            validate_sections(cfg)
            record_settings = RecordSettings.from_section(cfg.section("record"))
            parse_faults(inject)
        except PartError as exc:  # the stack cannot be built: exit 4, before anything starts
            fail(str(exc), code=4)
        except ConfigError as exc:
            fail(str(exc))
        if (live or live_port is not None) and (no_record or not record_settings.enabled):
            fail("--live needs the run record: drop --no-record (or set [record] enabled = true)")
        if dataset is not None:
            try:
                check_dataset_folder(dataset)
            except RecordError as exc:
                fail(f"--dataset: {exc}")
        elif keep_failures:
            fail("--keep-failures is about the --dataset episode: give --dataset DIR too")
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
        def on_recording(capture: Any) -> None:
            if capture.live_url is not None:
                console.print(f"[cyan]live view: {capture.live_url} (port {capture.live_port}; in Foxglove: "
                              "Open connection -> Foxglove WebSocket)[/]")

        def on_bridge(bridge: Any) -> None:
            s = bridge.settings
            console.print(f"[cyan]ROS 2 bridge: node {s.namespace.rstrip('/')}/{s.node_name}, domain "
                          f"{s.domain_id}, {s.distro}, listen={s.listen} connect={s.connect}[/]")

        try:
            outcome = run_task(cfg, RunOptions(task=task, duration_s=duration, llm_url=llm_url,
                                               model=model, out_dir=out, dashboard=not no_dashboard,
                                               inject=inject, record=False if no_record else None,
                                               live=True if live or live_port is not None else None,
                                               live_port=live_port, dataset=dataset,
                                               keep_failures=keep_failures, policy=policy),
                               stop_event=stop, dashboard_factory=dash, on_recording=on_recording,
                               on_bridge=on_bridge)
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
        _print_recording(report.get("recording"))
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

        from rtvla.errors import RecordError, RuntimeStackError
        from rtvla.metrics import render_table
        from rtvla.record.summary import render_mcap_summary, summarize_mcap
        from rtvla.runtime.run_dir import RunDir, load_run

        try:
            report = load_run(run_dir)
        except RuntimeStackError as exc:
            fail(str(exc))
        folder = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
        mcap, mcap_error = None, None
        if (folder / "run.mcap").is_file():
            try:
                mcap = summarize_mcap(folder / "run.mcap")
            except RecordError as exc:  # a damaged record must not hide the report
                mcap_error = str(exc)
        if json_out:
            report = {**report, "mcap": mcap if mcap is not None else (
                {"error": mcap_error} if mcap_error is not None else None)}
            console.print_json(json.dumps(report))
            return
        console.print(render_table(report, title=f"run {run_dir}"))
        task = report.get("task", {})
        console.print(f"task: {task.get('instruction')!r} success={task.get('success')} "
                      f"duration={task.get('duration_s')} s plan={task.get('plan_source')}")
        ex = report.get("exit", {})
        console.print(f"exit {ex.get('code')}: {ex.get('reason')}")
        _print_recording(report.get("recording"))
        if mcap is not None:
            console.print(render_mcap_summary(mcap))
            console.print(_time_range(mcap))
        elif mcap_error is not None:
            console.print(f"[yellow]run.mcap: {mcap_error}[/]")
        if not no_plots:
            paths = RunDir(folder).write_plots(report)
            for p in paths:
                console.print(f"plot: {p}")


def _print_recording(rec: dict[str, Any] | None) -> None:
    """One line per recorded file, then the recording's drops, cost and errors."""
    if not rec:
        return
    if not rec.get("enabled") and not rec.get("dataset"):
        console.print("recording: off")
        return
    files = rec.get("files") or {}
    if rec.get("enabled"):
        mcap, video = rec.get("mcap") or {}, rec.get("video") or {}
        drops = rec.get("dropped") or {}
        parts = []
        if "run.mcap" in files:
            parts.append(f"run.mcap {files['run.mcap'] / 1e6:.1f} MB, {mcap.get('messages', 0):,} messages")
        if "episode.mp4" in files:
            parts.append(f"episode.mp4 {files['episode.mp4'] / 1e6:.1f} MB, {video.get('frames_written', 0)} frames")
        dropped = sum(int(v or 0) for v in drops.values())
        console.print("recorded: " + ("; ".join(parts) or "nothing") + f"; dropped {dropped}; "
                      f"recording CPU {rec.get('cpu_s', 0.0):.1f} s ({rec.get('cpu_percent', 0.0):.1f} % of a core)")
    ds = rec.get("dataset")
    if ds:
        kept = "appended as episode " + str(ds.get("episode_index")) if ds.get("kept") else "not kept"
        console.print(f"dataset {ds.get('dataset')}: {kept} ({ds.get('frames', 0)} frames; "
                      f"{ds.get('total_episodes')} episodes in all)")
    for err in rec.get("errors") or []:
        console.print(f"[yellow]recording: {err}[/]")


def _time_range(info: dict[str, Any]) -> str:
    """The record's time range, in wall-clock time when the record says how."""
    import datetime as dt

    start, end = info.get("start_ns"), info.get("end_ns")
    if start is None or end is None:
        return "run.mcap: no messages"
    offset = info.get("wall_offset_ns")
    if offset is None:
        return f"run.mcap time range: {start / 1e9:.3f} .. {end / 1e9:.3f} s ({info['duration_s']:.1f} s)"

    def wall(ns: int) -> str:
        return dt.datetime.fromtimestamp((ns + offset) / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"run.mcap time range: {wall(start)} .. {wall(end)} UTC ({info['duration_s']:.1f} s)"
