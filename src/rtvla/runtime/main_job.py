"""The main job: plan a natural-language task, carry it out on the simulated robot, report.

``run_task`` builds the stack, starts it, plans the instruction through the planning service
(LLM with deadline and fallback, or the embedded rule planner), executes the validated plan,
and writes the run folder: ``report.json``, ``metrics.jsonl``, PNG plots, ``run.log``, and
(``[record]``, on by default) ``run.mcap`` and ``episode.mp4``; optionally it serves the record
live to Foxglove and appends the run to a LeRobot dataset. With ``[ros2] enabled = true`` a
ROS 2 bridge (:mod:`rtvla.runtime.ros2_bridge`) runs beside the stack from start to stop:
ROS 2 sees the run's joint states, transforms, images and status, may teleoperate the base
on ``/cmd_vel`` while no task executes, and instructions it sends are queued (listed in the
report; ``rtvla run`` carries out its own task). Its figures are the report's ``ros2``. The report, and a finished
(indexed) ``run.mcap``, are written on every way out (success, failure, Ctrl-C, SIGTERM, a
lost control process, a crash); a recording that fails is an event in the report.

Usage::

    outcome = run_task(load_config(), RunOptions(task="put the red cube in the blue bin"))
    print(outcome.exit_code, outcome.reason, outcome.run_dir)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtvla.config import Config
from rtvla.errors import ConfigError, RtvlaError
from rtvla.metrics import MetricsLog, Recorder, build_report
from rtvla.metrics.report import json_safe, merge_remote
from rtvla.record.capture import RunCapture, check_dataset_folder
from rtvla.record.settings import RecordSettings
from rtvla.resources.sampler import hypervisor_steal_s
from rtvla.runtime.faults import FaultInjector, parse_faults
from rtvla.runtime.ros2_bridge import BridgeSettings, RunBridge
from rtvla.runtime.run_dir import RunDir
from rtvla.runtime.settings import RuntimeSettings
from rtvla.runtime.stack import Stack
from rtvla.runtime.task import carry_out, evaluate_budgets
from rtvla.timing import Periodic

__all__ = ["EXIT_BUDGET", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "RunOptions", "RunOutcome",
           "evaluate_budgets", "run_task"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # the task failed or missed its deadline
EXIT_BUDGET = 3  # the task succeeded but a critical budget was violated
EXIT_ERROR = 4  # the stack could not be built or crashed
EXIT_INTERRUPTED = 130

_STEAL_NOTE_S = 0.5  # hypervisor steal worth mentioning beside a budget violation
_DEGRADATION_KINDS = {"degraded", "fault", "restart", "failed", "watchdog", "stale", "recovered",
                      "admission", "preempted", "bad_frame"}


@dataclass
class RunOptions:
    """What ``rtvla run`` was asked to do; None means "from config"."""

    task: str | None = None
    duration_s: float | None = None
    llm_url: str | None = None
    model: str | None = None
    out_dir: Path | None = None
    dashboard: bool = True
    inject: str | None = None  # "FAULT@SECONDS,..." (see rtvla.runtime.faults)
    record: bool | None = None  # run.mcap + episode.mp4 ([record] enabled)
    live: bool | None = None  # serve the record to Foxglove over WebSocket ([record] live)
    live_port: int | None = None  # its port ([record] live_port; 0 picks a free one)
    dataset: Path | None = None  # append the run to this LeRobot dataset as one episode
    keep_failures: bool = False  # keep that episode when the task fails too
    policy: str | None = None  # manipulate(pick ...) by this learned policy ([policy] source)


@dataclass
class RunOutcome:
    exit_code: int
    reason: str
    report: dict[str, Any]
    run_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)


class _Ticker:
    """Writes metrics.jsonl and runs the throughput checks at a fixed period, in a thread."""

    def __init__(self, log: MetricsLog, stack: Stack, period_s: float, warmup_s: float,
                 extra: Callable[[], dict[str, Any]]) -> None:
        self.log, self.stack, self.warmup_s, self.extra = log, stack, warmup_s, extra
        self.worker = Periodic(period_s, self.tick, name="rtvla-metrics")
        self._t0 = time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self._t0 > self.warmup_s:
            self.stack.recorder.check()
        self.log.write(extra=self.extra())

    def __enter__(self) -> _Ticker:
        self.worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop(timeout=5)
        self.worker.call()  # the last interval, up to the end of the run


def run_task(
    cfg: Config,
    options: RunOptions,
    *,
    stop_event: threading.Event | None = None,
    on_stack: Callable[[Stack], None] | None = None,
    dashboard_factory: Callable[[Stack, Any], Any] | None = None,
    on_recording: Callable[[RunCapture], None] | None = None,
    on_bridge: Callable[[RunBridge], None] | None = None,
) -> RunOutcome:
    """Run the main job; see the module docstring. ``on_stack`` sees the built stack before
    it starts (tests use it to inject faults); ``dashboard_factory(stack, state)`` returns a
    context manager that shows progress (the CLI's rich Live view); ``on_recording`` sees the
    run's recording once it records (the CLI prints the live view's address); ``on_bridge``
    sees the ROS 2 bridge once it is up (``[ros2] enabled``)."""
    settings = RuntimeSettings.from_section(cfg.section("runtime"))
    record_settings = RecordSettings.from_section(cfg.section("record"))
    ros2_settings = BridgeSettings.from_section(cfg.section("ros2"))
    if ros2_settings.enabled and importlib.util.find_spec("zenoh") is None:
        raise ConfigError("ros2.enabled: the ROS 2 bridge needs eclipse-zenoh: pip install 'rtvla[zenoh]'")
    bridges: list[RunBridge] = []  # the one started, for the finally that writes the report
    task = options.task or settings.task
    stop = stop_event or threading.Event()
    injector = FaultInjector(parse_faults(options.inject))  # a bad spec fails before anything
    if options.dataset is not None:
        check_dataset_folder(options.dataset)
    rd = RunDir.create(settings.out_root, label=task, path=options.out_dir)
    injector.run_dir = rd
    recorder = Recorder(cfg.requirements)
    capture = RunCapture(rd.path, record_settings, recorder=recorder, record=options.record,
                         live=options.live, live_port=options.live_port, dataset=options.dataset,
                         keep_failures=options.keep_failures)
    rd.on_refuse.append(capture.folder_unwritable)
    t_start = time.monotonic()
    info: dict[str, Any] = {"instruction": task, "success": False, "duration_s": None,
                            "plan_source": None, "plan": None, "plan_latency_s": None,
                            "degraded_reason": None, "execution": None}
    reason = ""
    code = EXIT_ERROR
    stack: Stack | None = None
    steal0 = hypervisor_steal_s()
    from rtvla.runtime.dashboard import DashboardState

    state = DashboardState(instruction=task, deadline_s=cfg.budget("task").deadline_s or 0.0)
    with rd:
        logger.info("run folder %s; task %r", rd.path, task)
        try:
            # matplotlib takes about a second to import: pay it while the stack is built, off
            # the exit path (a Ctrl-C or SIGTERM ends the run that much sooner; the plots come
            # last) and before the task runs (an import holds the GIL the loops need).
            preload = threading.Thread(target=_preload_plots, name="rtvla-preload-plots", daemon=True)
            preload.start()
            stack = Stack.build(cfg, recorder, llm_url=options.llm_url, model=options.model,
                                stop_event=stop, policy=options.policy)
            preload.join(timeout=10.0)
            injector.prepare(stack)
            if on_stack is not None:
                on_stack(stack)
            if stack.optimizer is not None:
                state.adapt_levels = len(stack.optimizer.ladder.levels)

            def on_progress(p: Any) -> None:
                if not state.steps or len(state.steps) != p.count:
                    state.steps = [""] * p.count
                state.steps[p.index] = p.name
                state.step_index, state.step_status = p.index, p.status.value
                if p.phase:
                    state.step_status = f"{p.status.value}: {p.phase}"

            stack.on_progress = on_progress

            def extra() -> dict[str, Any]:
                out: dict[str, Any] = {"task_step": state.step_index, "phase": state.phase}
                latest = stack.monitor.latest()
                if latest is not None:
                    out["system"] = {"cpu_percent": latest.cpu_percent, "memory_percent": latest.memory_percent,
                                     "process_rss_mb": latest.process_rss_mb}
                if stack.optimizer is not None:
                    out["adapt_level"] = stack.optimizer.level
                    state.adapt_level = stack.optimizer.level
                state.elapsed_s = time.monotonic() - t_start
                return out

            metrics = MetricsLog(rd.metrics_path, recorder)
            metrics.open()
            injector.metrics = metrics
            server = None
            if settings.prometheus_port is not None:
                from rtvla.metrics.prometheus import serve

                server, _ = serve(recorder, settings.prometheus_port, addr=settings.prometheus_addr)
                logger.info("Prometheus metrics on http://%s:%d/metrics", settings.prometheus_addr,
                            server.server_address[1])
            try:
                view = dashboard_factory(stack, state) if dashboard_factory is not None else None
                with _Ticker(metrics, stack, settings.metrics_interval_s, settings.warmup_s, extra), \
                        (view if view is not None else _Null()):
                    code, reason = _run_stack(stack, task, options, state, info, stop, settings,
                                              injector, capture, on_recording,
                                              ros2=ros2_settings if ros2_settings.enabled else None,
                                              bridges=bridges, on_bridge=on_bridge)
            finally:
                metrics.close()
                if server is not None:
                    server.shutdown()
                    server.server_close()
        except RtvlaError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            code = EXIT_ERROR
            logger.error("run failed: %s", reason)
        except KeyboardInterrupt:
            reason = "interrupted"
            code = EXIT_INTERRUPTED
        except Exception as exc:  # a bug must still leave a stopped robot and a report
            reason = f"unexpected {type(exc).__name__}: {exc}"
            code = EXIT_ERROR
            logger.exception("run crashed")
        finally:
            injector.close()
            # The recording stops reading the stack while every part is still alive, and is
            # finished (bounded, never raising) once the stack has stopped: the control
            # process's final figures go into it, and its result into the report.
            capture.stop()
            # The bridge stops (bounded) before the stack: no cmd_vel reaches a stopping robot.
            ros2_report = bridges[0].stop() if bridges else None
            stuck = stack.stop() if stack is not None else []
            if stuck:
                recorder.event("runtime", "fault", f"units did not stop in time: {stuck}")
            recording = capture.close(control_final=stack.control_final if stack is not None else None,
                                      success=bool(info["success"]))
            report = _final_report(recorder, stack, settings, info, code, reason, t_start)
            report["recording"] = recording
            if ros2_settings.enabled:
                report["ros2"] = ros2_report if ros2_report is not None else {
                    "enabled": True, "started": False,
                    "error": next((e["message"] for e in report["events"]
                                   if e["component"] == "ros2" and e["kind"] == "failed"), None)}
            # CPU time the hypervisor took from this VM during the run: stalls no scheduling
            # inside the guest can avoid (they show as missed cycles if long enough).
            steal = report["hypervisor_steal_s"] = hypervisor_steal_s() - steal0
            # Budgets decide the exit code only when the task itself succeeded.
            if code == EXIT_OK and report["critical_budgets_met"] is False:
                code = EXIT_BUDGET
                reason = "task succeeded but critical budgets were violated: " + "; ".join(
                    f"{n}: {', '.join(v['failed'])}" for n, v in report["budget_checks"].items()
                    if v["critical"] and not v["met"])
                if steal > _STEAL_NOTE_S:
                    reason += (f" (the hypervisor took {steal:.1f} s of CPU time from this VM "
                               "during the run)")
            if injector.faults:
                report["faults"] = injector.outcomes(stack, report)
            report["exit"] = {"code": code, "reason": reason}
            try:
                rd.write_report(report)
            except OSError as exc:
                # The run folder is unwritable (a full disk): the report is the record, so it
                # goes to stderr whole, and the run still ends with its own exit code.
                report["exit"]["report_write_error"] = str(exc)
                print(f"rtvla: cannot write {rd.report_path}: {exc}; the report follows on stderr",
                      file=sys.stderr)
                print(json.dumps(json_safe(report), indent=1), file=sys.stderr, flush=True)
            else:
                try:
                    rd.write_plots(report)
                except Exception as exc:  # plots are a convenience; the report is the record
                    logger.error("writing plots failed: %s", exc)
    return RunOutcome(code, reason, report, rd.path)


def _preload_plots() -> None:
    try:
        import rtvla.metrics.plots  # noqa: F401
    except Exception as exc:  # the plots will say it again, where they are written
        logger.debug("preloading the plots failed: %s", exc)


def _start_bridge(stack: Stack, settings: BridgeSettings, bridges: list[RunBridge],
                  on_bridge: Callable[[RunBridge], None] | None) -> None:
    """Start the ROS 2 bridge; one that cannot start (a port in use, a bad address) is a
    ``ros2``/``failed`` event and the run goes on without it, as a recording that fails does."""
    bridge = RunBridge(stack, settings)
    try:
        bridge.start()
    except ConfigError:
        raise  # eclipse-zenoh missing: the configuration cannot be honoured at all
    except Exception as exc:
        stack.recorder.event("ros2", "failed", f"ROS 2 bridge did not start: {exc}")
        logger.error("ROS 2 bridge did not start: %s", exc)
        return
    bridges.append(bridge)
    if on_bridge is not None:
        on_bridge(bridge)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _run_stack(stack: Stack, task: str, options: RunOptions, state: Any, info: dict[str, Any],
               stop: threading.Event, settings: RuntimeSettings,
               injector: FaultInjector | None = None, capture: RunCapture | None = None,
               on_recording: Callable[[RunCapture], None] | None = None, *,
               ros2: BridgeSettings | None = None, bridges: list[RunBridge] | None = None,
               on_bridge: Callable[[RunBridge], None] | None = None) -> tuple[int, str]:
    state.phase = "starting"
    stack.start()
    if capture is not None:
        capture.attach(stack, instruction=task)
        stack.on_progress = capture.wrap_progress(stack.on_progress)
        if on_recording is not None:
            on_recording(capture)
    if ros2 is not None:
        _start_bridge(stack, ros2, bridges if bridges is not None else [], on_bridge)
    if injector is not None:
        injector.start(stack)
    task_deadline = stack.cfg.budget("task").deadline_s or 120.0
    limit = options.duration_s if options.duration_s is not None else task_deadline
    t0 = time.monotonic()

    state.phase = "planning"

    def on_plan(result: Any) -> None:
        if capture is not None:
            capture.log_plan(task, result)
        state.plan_source = result.source + (" (degraded)" if result.degraded else "")
        if result.degraded:
            state.notes.append(f"plan degraded: {result.reason}")
        state.steps = [a.summary() if hasattr(a, "summary") else str(a) for a in result.plan.actions]
        state.phase = "executing"

    replans = stack.llm.replans if stack.llm is not None else 1
    outcome = carry_out(stack, task, stop, limit_s=limit, replans=replans, on_plan=on_plan)
    if outcome.planning_error is not None and not outcome.plans:
        info["degraded_reason"] = outcome.planning_error
        return EXIT_FAILED, f"no plan for {task!r}: {outcome.planning_error}"
    first, last = outcome.plans[0], outcome.plans[-1]
    info.update(plan_source=last["source"], plan=last["plan"], plan_latency_s=first["latency_s"],
                degraded_reason=first["degraded_reason"] or last["degraded_reason"],
                plans=outcome.plans)
    execution = outcome.execution
    if execution is None:
        return EXIT_INTERRUPTED, "interrupted before execution"
    duration = time.monotonic() - t0
    stack.recorder.latency("task", duration)
    info.update(duration_s=duration, success=execution.success, execution=execution.as_dict())
    state.phase = execution.status.value
    stop.wait(settings.linger_s)
    if stack.critical_failure:
        return EXIT_FAILED, f"critical component lost: {stack.critical_failure}"
    if execution.success and duration <= task_deadline:
        return EXIT_OK, f"task succeeded in {duration:.1f} s" + (
            f" after {len(outcome.plans) - 1} re-plan(s)" if len(outcome.plans) > 1 else "")
    if stop.is_set() and not execution.success:
        return EXIT_INTERRUPTED, "interrupted"
    if execution.success:
        return EXIT_FAILED, f"task succeeded but took {duration:.1f} s > deadline {task_deadline:g} s"
    return EXIT_FAILED, (f"task failed at step {execution.failed_step} "
                         f"({execution.failed_action}): {execution.reason}")


def _final_report(recorder: Recorder, stack: Stack | None, settings: RuntimeSettings,
                  info: dict[str, Any], code: int, reason: str, t_start: float) -> dict[str, Any]:
    report = build_report(recorder)
    if stack is not None and stack.control_final:
        _merge_control_process(report, stack.control_final)
    checks = evaluate_budgets(report, settings.max_miss_ratio)
    report["budget_checks"] = checks
    for name, check in checks.items():
        row = report["components"][name]
        if not check["met"]:
            row["status"] = "violated" if check["critical"] else "degraded"
        else:
            row["status"] = "breaches" if row.get("violations") else "ok"
    crit = [v["met"] for v in checks.values() if v["critical"]]
    report["critical_budgets_met"] = all(crit) if crit else None
    report["task"] = {k: info[k] for k in ("instruction", "success", "duration_s", "plan_source")}
    report["task"].update({k: info[k] for k in ("plan", "plan_latency_s", "degraded_reason", "execution")})
    report["task"]["plans"] = info.get("plans", [])
    report["degradations"] = [e for e in report["events"] if e["kind"] in _DEGRADATION_KINDS]
    report["wall_time_s"] = time.monotonic() - t_start
    if stack is not None:
        merge_remote(report, stack.remote_report())
        if stack.policy_source:
            report["policy"] = stack.policy_report()
        report["adaptation"] = stack.optimizer.report() if stack.optimizer is not None else []
        report["supervisor"] = {n: {"status": s.status, "restarts": s.restarts, "faults": s.faults,
                                    "critical": s.critical}
                                for n, s in stack.supervisor.states().items()}
        report["control"] = stack.control_stats()
        report["affinity"] = stack.affinity
        report["admission"] = stack.admission
        report["cgroups"] = stack.cgroups
        report["perception"] = stack.pipeline.stats()
        if len(stack.pipelines) > 1:
            report["cameras"] = {cam.name: {"source": str(cam.source.__class__.__name__),
                                            "pipeline": pipe.name, **pipe.stats()}
                                 for cam, pipe in zip(stack.cameras, stack.pipelines)}
        report["navigation"] = stack.navigator.stats() if stack.navigator is not None else None
        report["embodiment"] = stack.embodiment.describe()
        report["planner"] = stack.planner.stats()
        robot_stats = getattr(stack.robot, "stats", None)
        report["simulation"] = ((stack.control_final or {}).get("robot") if stack.control_in_process
                                else _as_dict(robot_stats()) if callable(robot_stats) else None)
        report["system"] = stack.monitor.summary()
        report["resources"] = stack.allocator.utilization()
    else:
        report["adaptation"] = []
    return report



def _merge_control_process(report: dict[str, Any], final: dict[str, Any]) -> None:
    """In process placement the control loop measured itself in its own recorder: its exact
    figures replace the relayed counts in the ``control`` row."""
    from rtvla.metrics.report import budget_status

    child = final.get("recorder") or {}
    row = report["components"].get("control")
    if row is None or not child:
        return
    row.update(
        latency_ms=child.get("latency_ms", row["latency_ms"]),
        stages_ms=child.get("observed_ms", row.get("stages_ms", {})),
        missed=int(final.get("missed", child.get("missed", row["missed"]))),
        count=int(final.get("ticks", child.get("count", row["count"]))),
        achieved_hz=float(final.get("achieved_hz", row["achieved_hz"])),
        violations=child.get("violations", row["violations"]),
    )
    row["status"] = budget_status(row)


def _as_dict(obj: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else obj
