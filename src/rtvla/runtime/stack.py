"""``Stack``: builds the embedded robot stack from config and starts/stops it in order.

The data path (DESIGN.md)::

    SimCamera ─frames─▶ VisionPipeline (30 Hz) ─detections─▶ WorldModel ─▶ TaskExecutor
    TaskExecutor ─goals─▶ Navigator (10 Hz, A* + DWA) ─┐
    TaskExecutor ─arm / gripper setpoints──────────────┴▶ setpoint channel ─▶ ControlLoop (100 Hz) ─▶ SimRobot
    SystemMonitor (10 Hz) ─▶ Recorder ◀─ every component;  AdaptiveOptimizer ─knobs─▶ perception, llm

Start order is dependency order (robot, camera, control, perception, navigation, monitor,
optimizer); stop is the reverse. Critical loops run under the :class:`Supervisor`, which
restarts them with backoff; a control-loop fault stops the robot at once.

Usage::

    stack = Stack.build(cfg, recorder)
    stack.start()
    ...
    stack.stop()
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtvla.action.control import ControlLoop, ControlSettings
from rtvla.action.control_process import ControlProcess
from rtvla.action.executor import Progress, TaskExecutor
from rtvla.action.navigation import Navigator, NavigatorConfig
from rtvla.action.skills import SetpointWriter, SkillContext, SkillSettings
from rtvla.action.world import WorldModel, labels_for_scene
from rtvla.adapt import AdaptConfig, AdaptiveOptimizer
from rtvla.channels import LatestValue
from rtvla.config import Config
from rtvla.errors import PartError, RuntimeStackError
from rtvla.language import Capabilities, LLMSettings, PlanningService
from rtvla.metrics import Recorder, build_report
from rtvla.perception import PerceptionConfig, VisionPipeline
from rtvla.policy.settings import PolicySettings
from rtvla.resources import PsutilSampler, ResourceAllocator, ResourcesConfig, SystemMonitor
from rtvla.robots.embodiment import Embodiment
from rtvla.runtime.admission import admit, cgroup_limits, cgroup_release, pin_current_thread
from rtvla.runtime.remote_parts import (
    RemoteCameraSource,
    RemoteLink,
    RemotePerception,
    RemoteSettings,
)
from rtvla.runtime.remote_robot import ProcessSetpoints, RemoteRobot
from rtvla.runtime.settings import RuntimeSettings, validate_sections
from rtvla.runtime.supervisor import Supervisor
from rtvla.runtime.task import TaskReport, carry_out, evaluate_budgets
from rtvla.runtime.wiring import (
    OpenedCamera,
    build_embodiment,
    build_planner,
    camera_specs,
    capabilities_for,
    color_classes,
    open_cameras,
    scene_info,
)

__all__ = ["Stack", "camera_pipeline"]

logger = logging.getLogger(__name__)

# The GIL hands over at most every switch interval (5 ms by default, half a control period);
# the control loop shares the process with other threads in thread placement.
_SWITCH_INTERVAL_S = 0.0005

# What the embedded stack's components use on the reference 2-core machine (measured with
# `rtvla run`: control ~6 % of a core, perception ~40-60 % at 30 Hz, navigation ~2 %), with
# headroom. Budget ceilings are limits to check, not what to reserve: reserving ceilings
# (0.8 + 0.7 + 0.6 cores) would refuse admission on two cores. [resources.requests] overrides.
_DEFAULT_REQUESTS: dict[str, dict[str, Any]] = {
    "control": {"cpu_cores": 0.2, "memory_mb": 100, "priority": 10, "critical": True},
    "perception": {"cpu_cores": 0.7, "memory_mb": 500, "priority": 9, "critical": True},
    "navigation": {"cpu_cores": 0.2, "memory_mb": 200, "priority": 9, "critical": True},
    # The LLM runs on its server; here only its client (and the rule planner) run.
    "llm": {"cpu_cores": 0.05, "memory_mb": 100, "priority": 3, "min_cpu_cores": 0.02,
            "min_memory_mb": 50},
}


def _resources_config(table: dict[str, Any], *, control_in_process: bool) -> ResourcesConfig:
    """``[resources]`` with the embedded stack's default requests under the configured ones."""
    defaults = dict(_DEFAULT_REQUESTS)
    if control_in_process:
        # A dedicated core for the control process; the main process shares the rest.
        defaults["control"] = {**defaults["control"], "exclusive_cpu": True}
    return ResourcesConfig.from_section({**table, "requests": {**defaults, **table.get("requests", {})}})


def _pin_threads(cpus: list[int]) -> list[int] | str:
    """Move every thread of this process (and so the threads they start) to ``cpus``."""
    try:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.sched_setaffinity(int(tid), cpus)
        return cpus
    except OSError as exc:
        logger.warning("could not pin the main process to CPUs %s: %s", cpus, exc)
        return f"refused: {exc}"


def _pin_control(settings: ControlSettings, table: dict[str, Any]) -> ControlSettings:
    """Process placement default: SCHED_FIFO priority 80 where the OS permits it (a clear
    warning where not); the CPU comes from the allocator at start. ``[control]`` values win."""
    update: dict[str, Any] = {}
    if "fifo_priority" not in table:
        update["fifo_priority"] = 80
    return settings.model_copy(update=update)


def camera_pipeline(cfg: Config, emb: Embodiment, cam: OpenedCamera, recorder: Recorder, *,
                    primary: bool, detectors: list[Any] | None = None) -> VisionPipeline:
    """A latest-frame pipeline for one camera: measured as ``perception`` (the first) or
    ``perception.<camera>`` (sub-components inherit perception's budget)."""
    ptable = cfg.section("perception")
    if "color_classes" not in ptable and ptable.get("detector", "color") == "color":
        ptable["color_classes"] = color_classes(emb.world)
    pcfg = PerceptionConfig.from_section(ptable)
    size = _camera_size(cam)
    if "resolutions" not in cfg.section("perception") and size is not None:
        w, h = size  # quality levels relative to what the camera delivers: never upscale
        pcfg = pcfg.model_copy(update={"resolutions": [(w, h), (w * 3 // 4, h * 3 // 4), (w // 2, h // 2)]})
    name = "perception" if primary else f"perception.{cam.name}"
    budget = cfg.budget("perception")
    rate = pcfg.rate_hz
    if not primary and cam.rate_hz and budget.rate_hz and cam.rate_hz < budget.rate_hz:
        # A slower camera (a room camera at 10 Hz) is measured against its own rate.
        rate = cam.rate_hz
        budget = budget.model_copy(update={"rate_hz": rate, "min_throughput_hz": rate})
        recorder.set_budget(name, budget)
    dets = list(detectors) if detectors is not None else pcfg.build_detectors()
    return VisionPipeline(cam.source, dets, settings=pcfg.pipeline_settings(),
                          recorder=recorder, budget=budget, rate_hz=rate, own_source=False, name=name)


def _policy_skills(source: str | None) -> dict[str, Any] | None:
    """The executor's skills with ``manipulate(pick ...)`` by the learned policy at ``source``
    (None: the scripted skills). A source that cannot be loaded fails here, before start."""
    if not source:
        return None
    from rtvla.policy.pick.skill import policy_skills

    try:
        return policy_skills(source)
    except (OSError, ValueError) as exc:
        raise PartError(f"policy {source!r}: {exc}") from None


def _start_policy_process(source: str, settings: PolicySettings, control_hz: float,
                          dof: int) -> tuple[Any, Any, dict[str, Any]]:
    """The learned pick's policy in its own process (``[policy] placement = "process"`` with
    control in a process): (the started PolicyProcess, the PolicyLink for the control
    process, the pick model's metadata). A source that cannot be loaded fails here."""
    from rtvla.policy.pick.scheduled import open_pick_policy, pick_link, pick_model_metadata
    from rtvla.policy.pick.skill import PolicyPickSettings
    from rtvla.policy.process import PolicyProcess

    try:
        meta = pick_model_metadata(source)
    except (OSError, ValueError, RuntimeError) as exc:
        raise PartError(f"policy {source!r}: {exc}") from None
    # As many of each chunk's actions as the executor-side pick uses (its tuned default).
    steps = PolicyPickSettings().chunk_steps
    proc = PolicyProcess(open_pick_policy, {"source": source, "chunk_steps": steps,
                                            "options": dict(settings.options)}, name="policy")
    try:
        proc.start()
        link = pick_link(proc, control_hz=control_hz, dof=dof)
    except BaseException as exc:
        proc.stop()
        if isinstance(exc, (OSError, ValueError, RuntimeError)):
            raise PartError(f"policy {source!r}: {exc}") from None
        raise
    return proc, link, meta


def _pin_process(pid: int, cpus: list[int]) -> list[int] | str:
    """Move every thread of process ``pid`` to ``cpus``."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.sched_setaffinity(int(tid), cpus)
        return cpus
    except OSError as exc:
        logger.warning("could not pin process %d to CPUs %s: %s", pid, cpus, exc)
        return f"refused: {exc}"


def _camera_size(cam: OpenedCamera) -> tuple[int, int] | None:
    intr = cam.intrinsics
    if intr is not None and getattr(intr, "width", None) and getattr(intr, "height", None):
        return int(intr.width), int(intr.height)
    w, h = getattr(cam.source, "width", None), getattr(cam.source, "height", None)
    return (int(w), int(h)) if w and h else None


def _default_ladder(pipeline: Any, planner: PlanningService) -> list[dict[str, Any]]:
    """Quality levels that shed CPU without touching any loop's rate: perception input
    resolution first (the largest cost), then a lighter LLM when one is configured. Frame
    skipping is left out: it would drop perception below its 30 Hz budget."""
    levels: list[dict[str, Any]] = []
    if "resolution" in pipeline.knobs:  # a remote perception node turns its own knobs
        levels = [{"perception.resolution": r} for r in pipeline.knobs["resolution"].values[1:]]
    if "model" in planner.knobs and len(planner.knobs["model"].values) > 1:
        levels.append({"llm.model": planner.knobs["model"].values[1]})
    return levels


def _remote_link(cfg: Config, recorder: Recorder, emb: Embodiment, *, in_process: bool) -> RemoteLink | None:
    """The link to ``[remote.<part>]`` parts (None without any), with the robot's telemetry
    for the nodes' cameras when the plug-in mirrors one."""
    settings = RemoteSettings.from_section(cfg.section("remote"))
    if not settings.parts:
        return None
    tel = emb.telemetry
    telemetry: Callable[[], np.ndarray | None] | None = None
    if tel is not None and in_process:
        telemetry = tel.latest  # what the control process mirrors
    elif tel is not None:
        buf = np.zeros(tel.size)

        def telemetry() -> np.ndarray:
            tel.write(emb.robot, buf)  # the robot runs in this process
            return buf.copy()
    return RemoteLink(settings, recorder, robot=emb.name, telemetry=telemetry)


def _remote_camera(link: RemoteLink, local: OpenedCamera) -> OpenedCamera:
    """The first camera, its frames from `rtvla node camera` (with each frame's pose)."""
    name = link.settings.parts["camera"].camera or local.name
    src = RemoteCameraSource(link, link.keys.camera(name))
    return OpenedCamera(local.name, src, src.pose, local.intrinsics, True, local.rate_hz)


@dataclass
class Stack:
    """Every part of the running stack. Build with :meth:`build`."""

    cfg: Config
    settings: RuntimeSettings
    recorder: Recorder
    robot: Any  # the plug-in's Robot (thread placement) or a RemoteRobot (process placement)
    embodiment: Embodiment
    cameras: list[OpenedCamera]
    setpoints: Any  # LatestValue, or ProcessSetpoints into the control process
    control: Any  # ControlLoop (thread) or ControlProcess (process)
    pipeline: Any  # the first camera's VisionPipeline (it feeds the world model), or a RemotePerception
    pipelines: list[VisionPipeline]  # one per camera in `cameras` (the local ones)
    navigator: Navigator | None  # None for a robot without a base or a map
    world: WorldModel
    executor: TaskExecutor
    planner: PlanningService
    capabilities: Capabilities
    monitor: SystemMonitor
    allocator: ResourceAllocator
    optimizer: AdaptiveOptimizer | None
    supervisor: Supervisor
    stop_event: threading.Event
    progress: list[Progress] = field(default_factory=list)
    on_progress: Callable[[Progress], None] | None = None
    critical_failure: str | None = None
    control_final: dict[str, Any] | None = None
    resources_cfg: ResourcesConfig | None = None
    affinity: dict[str, Any] = field(default_factory=dict)
    admission: dict[str, Any] = field(default_factory=dict)
    cgroups: dict[str, Any] = field(default_factory=dict)
    llm: LLMSettings | None = None
    policy_source: str | None = None  # the learned policy that runs manipulate(pick ...), if any
    remote: RemoteLink | None = None  # parts served by `rtvla node` ([remote.<part>])
    policy_process: Any = None  # the PolicyProcess feeding the control process's scheduler, if any
    _started: list[str] = field(default_factory=list)
    _old_switch: float | None = None
    _orig_affinity: list[int] | None = None

    @property
    def control_in_process(self) -> bool:
        return isinstance(self.control, ControlProcess)

    @classmethod
    def build(
        cls,
        cfg: Config,
        recorder: Recorder,
        *,
        llm_url: str | None = None,
        model: str | None = None,
        stop_event: threading.Event | None = None,
        embodiment: Embodiment | None = None,
        detectors: list[Any] | None = None,
        planner: Any = None,
        policy: str | None = None,
    ) -> Stack:
        """Validate every section and resolve every part, then construct (not start) the
        whole stack around the robot plug-in's :class:`Embodiment`. ``embodiment``,
        ``detectors`` and ``planner`` are parts given as objects instead of by name. ``policy``
        (``builtin:pick`` or a pick-policy ONNX file; default ``[policy] source``) runs the
        ``manipulate(pick ...)`` steps with the learned policy instead of the scripted skill:
        with ``[policy] placement = "process"`` (the default) and control in a process, the
        policy runs in its own process and its chunks are executed by the control process's
        chunk scheduler (:class:`~rtvla.policy.pick.scheduled.ScheduledPick`); otherwise from
        the executor (:class:`~rtvla.policy.pick.skill.PolicyPick`)."""
        validate_sections(cfg)
        settings = RuntimeSettings.from_section(cfg.section("runtime"))
        llm_table = cfg.section("llm")
        if llm_url:
            llm_table["base_url"] = llm_url
        if model:
            llm_table["model"] = model
        llm = LLMSettings.from_mapping(llm_table)
        policy_settings = PolicySettings.from_mapping(cfg.section("policy"))
        stop = stop_event or threading.Event()

        emb = embodiment if embodiment is not None else build_embodiment(cfg, recorder)
        ctl_settings = ControlSettings.from_config(cfg)
        control_rate = cfg.budget("control").rate_hz or 100.0
        process: ControlProcess | None = None
        placement_note = None
        if ctl_settings.placement == "process" and not emb.process_safe:
            placement_note = (f"robot {emb.name!r} cannot be built in a child process "
                              "(process_safe = False): control runs in a thread of this process")
            ctl_settings = ctl_settings.model_copy(update={"placement": "thread"})
        policy_source = policy or policy_settings.source
        # The learned pick runs through the control process's chunk scheduler when both the
        # policy and control have processes of their own; otherwise from the executor.
        scheduled = bool(policy_source) and policy_settings.placement == "process" \
            and ctl_settings.placement == "process"
        policy_proc: Any = None
        try:
            link = pick_meta = None
            if scheduled:
                assert policy_source is not None
                policy_proc, link, pick_meta = _start_policy_process(
                    policy_source, policy_settings, control_rate, emb.robot.limits.dof)
            if ctl_settings.placement == "process":
                assert emb.process_factory is not None  # Embodiment checks process_safe
                ctl_settings = _pin_control(ctl_settings, cfg.section("control"))
                tel = emb.telemetry
                process = ControlProcess(
                    emb.process_factory, emb.robot.limits.dof, settings=ctl_settings,
                    rate_hz=control_rate, telemetry=tel.write if tel is not None else None,
                    telemetry_size=tel.size if tel is not None else 0, policy=link,
                )
                emb = emb.hosted(RemoteRobot(emb.robot, process, tel), process.latest_telemetry)
                setpoints: Any = ProcessSetpoints(process)
                control: Any = process
            else:
                emb.robot.connect()
                setpoints = LatestValue("setpoints")
                control = ControlLoop(emb.robot, setpoints, recorder=recorder, settings=ctl_settings,
                                      budget=cfg.budget("control"))
            robot = emb.robot
            cams = open_cameras(camera_specs(cfg, emb), emb)
            if not cams:
                raise RuntimeStackError(f"robot {emb.name!r} carries no camera and [[cameras]] names none")
            remote = _remote_link(cfg, recorder, emb, in_process=process is not None)
            remote_perception = None
            if remote is not None and "camera" in remote.parts:
                cams[0] = _remote_camera(remote, cams[0])
            pipelines: list[Any] = [camera_pipeline(cfg, emb, cam, recorder, primary=i == 0, detectors=detectors)
                                    for i, cam in enumerate(cams) if i or remote is None
                                    or "perception" not in remote.parts]
            primary = cams[0]
            if remote is not None and "perception" in remote.parts:
                # The first camera and its pipeline run in `rtvla node perception`.
                remote_perception = RemotePerception(remote, recorder)
                cams = cams[1:]  # cameras and pipelines stay pairs: the local ones
            pipeline = remote_perception if remote_perception is not None else pipelines[0]
            if remote_perception is None and primary.pose_fn is None:
                raise RuntimeStackError(f"camera {primary.name!r}: the first camera must be one the robot "
                                        "carries (its pose places detections in the world)")
            navigator = None
            if emb.has_base and emb.world.map is not None:
                navigator = Navigator(emb.world.map, robot, setpoints, recorder=recorder,
                                      places={n: pl.pose for n, pl in emb.world.places.items()},
                                      config=NavigatorConfig.from_section(cfg.section("navigation")),
                                      budget=cfg.budget("navigation"))
            world = WorldModel(pipeline.channel, remote_perception.pose if remote_perception is not None
                               else primary.pose_fn, labels=labels_for_scene(emb.world))
            ctx = SkillContext(
                read_state=robot.read_state, setpoints=SetpointWriter(setpoints), navigator=navigator,
                kinematics=emb.kinematics, world=world, scene=scene_info(emb.world),
                settings=SkillSettings.from_section(cfg.section("executor")), recorder=recorder,
                on_say=lambda text: recorder.event("communication", "say", text),
            )
            stack_progress: list[Progress] = []
            if policy_proc is not None:
                from rtvla.policy.pick.scheduled import ScheduledPick

                skills = ScheduledPick(policy_proc, process, metadata=pick_meta).skills()
            else:
                skills = _policy_skills(policy_source)
            executor = TaskExecutor(ctx, skills=skills)
            capabilities = capabilities_for(emb)
            planner = build_planner(llm, cfg, capabilities, recorder, planner=planner)
            rcfg = _resources_config(cfg.section("resources"), control_in_process=process is not None)
            sampler = PsutilSampler()
            monitor = rcfg.build_monitor(sampler, recorder=recorder)
            allocator = rcfg.build_allocator(sampler=sampler, recorder=recorder)
            acfg = AdaptConfig.from_section(cfg.section("adapt"))
            if acfg.levels is None:
                acfg = acfg.model_copy(update={"levels": _default_ladder(pipeline, planner)})
            tunable = [planner] if remote_perception is not None else [pipeline, planner]
            optimizer = (AdaptiveOptimizer.from_config(acfg, tunable, recorder, monitor)
                         if acfg.enabled else None)
        except BaseException:
            emb.close()
            if policy_proc is not None:
                policy_proc.stop()
            raise
        supervisor = Supervisor(recorder)
        stack = cls(cfg, settings, recorder, robot, emb, cams, setpoints, control, pipeline, pipelines,
                    navigator, world, executor, planner, capabilities, monitor, allocator, optimizer,
                    supervisor, stop, stack_progress)
        stack.resources_cfg = rcfg
        stack.llm = llm
        stack.policy_source = policy_source
        stack.policy_process = policy_proc
        stack.remote = remote
        if remote is not None:
            remote.on_critical_failure = stack._critical_failure
            remote.on_change = stack._remote_changed
        if placement_note is not None:
            recorder.event("control", "placement", placement_note)
            logger.warning("%s", placement_note)
        for pipe in pipelines:
            # The detector's worker threads are perception's CPU too, and run where it runs.
            pipe.on_worker_start = functools.partial(stack._pin, pipe.name)
        executor.on_progress = stack._progress
        supervisor.on_critical_failure = stack._critical_failure
        return stack

    # -- the Python API ---------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config | str | os.PathLike[str] | None = None, *,
                    recorder: Recorder | None = None, **parts: Any) -> Stack:
        """Build a stack from a :class:`Config`, a path to ``rtvla.toml`` or the defaults
        (``rtvla.toml`` in the working directory and ``RTVLA_*`` variables when None);
        ``parts`` are :meth:`build`'s keyword arguments (``embodiment=``, ``planner=`` ...)."""
        from rtvla.config import load_config

        cfg = config if isinstance(config, Config) else load_config(config)
        return cls.build(cfg, recorder if recorder is not None else Recorder(cfg.requirements), **parts)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, task: str, *, timeout_s: float | None = None) -> TaskReport:
        """Carry out ``task`` on the started stack (plan, execute, re-plan once on a failed
        step) and report it with every component's figures against its budget."""
        limit = timeout_s if timeout_s is not None else (self.cfg.budget("task").deadline_s or 120.0)
        replans = self.llm.replans if self.llm is not None else 1
        self.stop_event.clear()
        outcome = carry_out(self, task, self.stop_event, limit_s=limit, replans=replans)
        ex = outcome.execution
        if outcome.planning_error and not outcome.plans:
            reason = f"no plan: {outcome.planning_error}"
        elif ex is None:
            reason = "stopped before execution"
        elif ex.success:
            reason = f"succeeded in {outcome.duration_s:.1f} s"
        else:
            reason = f"failed at step {ex.failed_step} ({ex.failed_action}): {ex.reason}"
        if self.critical_failure:
            reason = f"critical component lost: {self.critical_failure}"
        self.recorder.latency("task", outcome.duration_s)
        report = build_report(self.recorder)
        if self.control_in_process:
            report["components"]["control"]["missed"] = int(self.control.live_stats().get("missed", 0))
        return TaskReport(task, outcome.success, outcome.duration_s, reason, outcome.plans,
                          report["components"], evaluate_budgets(report, self.settings.max_miss_ratio),
                          report["events"])

    def reset_robot(self, timeout: float = 5.0) -> None:
        """Put the robot back to its start (a simulator's scene reset) between tasks; the
        world model forgets what it saw. Raises :class:`RuntimeStackError` if it cannot."""
        before = self.robot.read_state().stamp_ns
        if self.control_in_process:
            self.control.reset_robot()
        else:
            self.control.request_robot_reset()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = [e for e in self.recorder.events if e.component == "control"
                      and e.kind in ("robot_reset", "robot_reset_refused") and e.stamp_ns >= before]
            if self.control_in_process:
                # The child records in its own recorder: wait for a state published after.
                st = self.control.wait_state(0.1)
                if st is not None and st.state.stamp_ns > before and self._reset_seen(st):
                    break
            elif events:
                if events[-1].kind == "robot_reset_refused":
                    raise RuntimeStackError("the robot cannot be reset (it has no reset())")
                break
            else:
                time.sleep(0.01)
        else:
            raise RuntimeStackError(f"the robot did not reset within {timeout:g} s")
        for name in list(self.embodiment.world.objects):
            self.world.forget(name)

    def _reset_seen(self, st: Any) -> bool:
        """A reset robot holds nothing and stands still (the simulator's start)."""
        return float(np.abs(st.state.base_vel).max()) < 1e-6 and self.robot.holding is None

    # -- events ---------------------------------------------------------------------------

    def _progress(self, p: Progress) -> None:
        self.progress.append(p)
        if self.on_progress is not None:
            self.on_progress(p)

    def _critical_failure(self, name: str, message: str) -> None:
        """A critical component is gone for good: stop the robot and end the run."""
        self.critical_failure = f"{name}: {message}"
        try:
            self.robot.stop()
        finally:
            self.stop_event.set()

    def _remote_changed(self, name: str, status: str, message: str) -> None:
        """A remote part is ``lost`` or ``running`` again: the supervisor's record says so (its
        unit is this side's relay), and a lost part with ``stop_robot`` stops the robot."""
        self.supervisor.note(name, status, message if status == "lost" else None)
        assert self.remote is not None
        if status == "lost" and self.remote.settings.parts[name].stop_robot:
            self.recorder.event(name, "stop", f"remote {name} lost: the robot is stopped (latched)")
            self._stop_robot()

    def _stop_robot(self) -> None:
        """A latched safe stop: the control loop holds the robot until an explicit reset."""
        if not self.control_in_process:
            self.control.request_stop("the runtime stopped the robot")
        try:
            self.robot.stop()
        except Exception as exc:
            logger.error("robot.stop() failed: %s", exc)

    # -- lifecycle ------------------------------------------------------------------------

    def _admit(self) -> None:
        """Ask the allocator for each component's resources. A refused one runs degraded
        (or, with ``resources.strict``, the run refuses to start); a preemption later turns
        quality down through the optimizer."""
        rcfg = self.resources_cfg
        assert rcfg is not None  # set by build()
        hook = self.optimizer.handle_preemption if self.optimizer is not None else None
        parts = {"control": None, "perception": self.pipeline, "navigation": self.navigator,
                 "llm": self.planner}
        if isinstance(self.pipeline, RemotePerception):
            del parts["perception"]  # it runs, and is admitted, on its node's host
        requests = {name: (rcfg.request_for(name, self.cfg.budget(name)), comp)
                    for name, comp in parts.items()}
        self.admission = admit(self.allocator, requests, strict=rcfg.strict, recorder=self.recorder,
                               on_preempt=hook)

    def _thread_cpus(self, name: str) -> list[int]:
        """Where a thread-placed component runs: its planned CPUs when the control CPU is
        isolated, else every CPU this process may use (the control process only pins itself)."""
        if self.control_in_process and self.settings.isolate_control_cpu:
            return list(self.allocator.affinity_plan().cpus_for(name))
        return sorted(os.sched_getaffinity(0))

    def _pin(self, name: str) -> None:
        """Attribute the calling thread to ``name`` and pin it where the plan says."""
        self.monitor.register_thread(name)
        done = pin_current_thread(self._thread_cpus(name))
        self.affinity.setdefault("threads", {}).setdefault(name, done)

    def _unit(self, comp: Any, *, register: bool = True) -> Callable[[threading.Event], Any]:
        def run(stop: threading.Event) -> Any:
            if register:
                self._pin(comp.name)
            comp.stop_event.clear()
            return comp.run()
        return run

    def _watch_control_process(self, stop: threading.Event) -> None:
        """Relay the control process's live figures into the recorder; a dead control process
        is a lost robot: stop the run."""
        proc = self.control
        rec = self.recorder
        last_ticks = last_missed = last_steps = 0
        period = 1.0 / proc.rate_hz
        relay_every = max(1, int(round(0.05 / period)))  # relay figures at ~20 Hz
        gauges = ["lateness_max_us", "loop_time_max_ms", "watchdog_trips", "stopped"]
        if proc.policy is not None:  # the chunk scheduler's running counts, in the report too
            gauges += ["policy_engaged", "policy_chunks", "policy_starved_ticks", "policy_stops", "policy_rejected"]
        n = 0
        # Liveness once per control period: a loop that stops ticking (hung in a driver
        # call, not dead) is lost as surely as a dead process.
        while not stop.wait(period):
            lost = proc.check_alive()
            if lost is not None:
                self.recorder.event("control", "lost", lost, exit=proc.exitcode)
                self._critical_failure("control", lost)
                return
            n += 1
            if n % relay_every:
                continue
            live = proc.live_stats()
            if not live:
                continue
            ticks, missed = int(live["ticks"]), int(live["missed"])
            done, steps = proc.recent_steps()
            fresh = min(len(steps), max(0, done - last_steps))
            for step_s in steps[len(steps) - fresh:]:
                rec.latency("control", float(step_s))  # exact samples (unless we fell behind)
            last_steps = max(last_steps, done)
            if ticks > last_ticks:
                rec.count("control", ticks - last_ticks)
            if missed > last_missed:
                rec.miss("control", missed - last_missed)
            last_ticks, last_missed = ticks, missed
            for key in gauges:
                rec.gauge("control", key, live[key])

    def start(self) -> None:
        """Start everything in dependency order and wait until control and camera are live."""
        timeout = self.settings.startup_timeout_s
        self._admit()
        if self.control_in_process:
            self._start_control_process(timeout)
        self.planner.open()
        self._old_switch = sys.getswitchinterval()
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        if self.remote is not None:
            self._started.append("remote")  # before starting: a half-started link is closed on stop
            self.remote.start()
        self._started.append("camera")  # before opening: a half-opened set is closed on stop
        for cam in self.cameras:
            try:
                cam.source.open()
            except Exception as exc:
                raise RuntimeStackError(f"camera {cam.name!r} could not be opened: {exc}") from exc
        sup = self.supervisor
        if self.control_in_process:
            sup.add("control", self._watch_control_process, critical=True, on_fault=self._stop_robot)
        else:
            sup.add("control", self._unit(self.control), critical=True, on_fault=self._stop_robot,
                    stop=self.control.stop)
        remote_perception = isinstance(self.pipeline, RemotePerception)
        for pipe in [self.pipeline, *self.pipelines] if remote_perception else self.pipelines:
            # A remote part's relay thread is not the part: its CPU comes from the node.
            sup.add(pipe.name, self._unit(pipe, register=not isinstance(pipe, RemotePerception)),
                    critical=True, stop=pipe.stop)
        if self.navigator is not None:
            sup.add("navigation", self._unit(self.navigator), critical=True, on_fault=self._stop_robot,
                    stop=self.navigator.stop)
        sup.start()
        self._started.append("supervisor")
        self.monitor.start()
        self._started.append("monitor")
        if self.optimizer is not None:
            self.optimizer.start()
            self._started.append("optimizer")
        for pipe in self.pipelines:
            if pipe is not self.pipeline and pipe.channel.wait_newer(0, timeout=timeout) is None:
                raise RuntimeStackError(f"{pipe.name} published nothing within {timeout:g} s "
                                        "(its camera delivered no frame)")
        if self.pipeline.channel.wait_newer(0, timeout=timeout) is None:
            if self.remote is not None and self.remote.parts.keys() & {"perception", "camera"}:
                part = "perception" if "perception" in self.remote.parts else "camera"
                raise RuntimeStackError(
                    f"perception published nothing within {timeout:g} s: is `rtvla node {part}` running "
                    f"and reachable at {self.remote.parts[part].settings.endpoint or self.remote.settings.connect}?")
            raise RuntimeStackError(f"perception published nothing within {timeout:g} s")

    def _start_control_process(self, timeout: float) -> None:
        """Start the control process on the allocator's dedicated CPU (unless ``[control].cpu``
        says otherwise), then keep this process's threads off that CPU: a thread of ours
        there could preempt the simulator thread while it holds the control process's GIL
        and delay the SCHED_FIFO control thread behind it (priority inversion)."""
        proc = self.control
        plan = self.allocator.affinity_plan()
        cpu = proc.settings.cpu
        if cpu is None and "control" in plan.dedicated:
            cpu = plan.dedicated["control"]
        if cpu is not None:
            proc.realtime = dataclasses.replace(proc.realtime, cpus=[cpu])
        proc.start_timeout_s = timeout
        proc.start()
        self._started.append("control_process")
        if proc.wait_state(timeout) is None:
            raise RuntimeStackError(f"the control process published no state within {timeout:g} s")
        self.monitor.register_process("control", proc.pid)
        budget = self.cfg.budget("control")
        self.cgroups["control"] = cgroup_limits("control", proc.pid, cpu_cores=budget.max_cpu_percent / 100,
                                                memory_mb=budget.max_memory_mb)
        shared = [c for c in plan.shared_cpus if c != cpu] if cpu is not None else list(plan.shared_cpus)
        self._orig_affinity = sorted(os.sched_getaffinity(0))
        if cpu is not None and shared and self.settings.isolate_control_cpu:
            self.affinity = {"control": [cpu], "main": _pin_threads(shared)}
            if self.policy_process is not None and self.policy_process.pid is not None:
                # Inference off the control CPU too (started before the CPU was chosen).
                self.affinity["policy"] = _pin_process(self.policy_process.pid, shared)
        else:
            self.affinity = {"control": [cpu] if cpu is not None else None, "main": self._orig_affinity}
            self._orig_affinity = None  # nothing to restore
        self.recorder.event("runtime", "affinity", f"control process on CPUs {self.affinity['control']}; "
                            f"main process on {self.affinity['main']}", **self.affinity)

    def _close_cameras(self) -> None:
        for cam in self.cameras:
            try:
                cam.source.close()
            except Exception as exc:
                logger.warning("camera %s close failed: %s", cam.name, exc)

    def remote_report(self) -> dict[str, Any] | None:
        """The report's ``remote`` section (None without remote parts)."""
        return None if self.remote is None else self.remote.report()

    def control_stats(self) -> dict[str, Any]:
        """The control loop's figures (from the control process once it has stopped)."""
        if self.control_in_process:
            final = dict(self.control_final or self.control.live_stats())
            final.pop("lateness_us", None)
            if final.get("policy"):  # the scheduler's figures; its per-boundary samples stay out
                final["policy"] = {k: v for k, v in final["policy"].items() if k != "jumps"}
            final["placement"] = "process"
            final["pid"] = self.control.pid
            final["realtime"] = (self.control.child_info or {}).get("realtime")
            return final
        return {**self.control.stats(), "placement": "thread"}

    def policy_report(self) -> dict[str, Any] | None:
        """The report's ``policy`` section (None without a learned policy): where the pick ran
        and, through the control process's scheduler, its figures (final once control has
        stopped, live before) and the policy process's."""
        if not self.policy_source:
            return None
        out: dict[str, Any] = {"source": self.policy_source, "runs": "manipulate(pick ...)"}
        if self.policy_process is None:
            out["placement"] = "executor"
            return out
        out["placement"] = "control process"
        final = (self.control_final or {}).get("policy")
        if final:
            sched = {k: v for k, v in final.items() if k != "jumps"}  # the samples stay out
        else:
            live = self.control.live_stats()
            sched = {k.removeprefix("policy_"): v for k, v in live.items() if k.startswith("policy_")}
        out["scheduler"] = sched
        out["process"] = self.policy_process.stats()
        return out

    def stop(self) -> list[str]:
        """Stop in reverse order; the robot is stopped first and closed last. Returns the
        names of units that did not stop in time. How long each part took is an event
        (``runtime``/``stopped``) in the report."""
        took: dict[str, float] = {}

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            t0 = time.monotonic()
            try:
                return fn()
            finally:
                took[name] = round(time.monotonic() - t0, 3)

        t_all = time.monotonic()
        timed("robot_stop", self._stop_robot)
        stuck: list[str] = []
        if "optimizer" in self._started and self.optimizer is not None:
            timed("optimizer", self.optimizer.stop)
        if "monitor" in self._started:
            timed("monitor", self.monitor.stop)
        if "supervisor" in self._started:
            stuck = timed("supervisor", self.supervisor.stop)
        if "camera" in self._started:
            timed("camera", self._close_cameras)
        if "remote" in self._started and self.remote is not None:
            timed("remote", self.remote.stop)
        timed("planner", self.planner.close)
        if "control_process" in self._started:
            proc = self.control
            # A child already known lost (dead or hung) gets no long goodbye.
            timeout = 1.0 if proc.lost_reason is not None else None
            try:
                self.control_final = timed("control_process", lambda: proc.stop(timeout))
            except Exception as exc:
                logger.error("control process stop: %s", exc)
                self.recorder.event("control", "fault", f"control process stop: {exc}",
                                    exit=proc.exitcode)
                if proc.lost_reason is None:
                    stuck.append("control")
        if self.policy_process is not None:
            # After the control process: its scheduler has let go of the policy's channels.
            timed("policy_process", self.policy_process.stop)
        if self._started or not self.control_in_process:
            # Cameras (again, harmlessly), then the robot unless the control process owns it.
            timed("embodiment", self.embodiment.close)
        for info in self.cgroups.values():
            cgroup_release(info)
        if self._started:
            total = time.monotonic() - t_all
            self.recorder.event("runtime", "stopped", f"stack stopped in {total:.2f} s", total_s=round(total, 3),
                                **took)
            logger.info("stack stopped in %.2f s: %s", total, took)
        if self._old_switch is not None:
            sys.setswitchinterval(self._old_switch)
        if self._orig_affinity is not None:
            _pin_threads(self._orig_affinity)  # a library caller gets its CPUs back
            self._orig_affinity = None
        self._started.clear()
        return stuck
