"""One task on a running stack: plan, execute, and plan again once when a step fails.

The planner's context holds what the embodiment knows (places, objects, receptacles,
surfaces), where the robot is, what it holds, and what the cameras see now (with age). When
a step fails (not when the run is stopped or out of time), the planner is asked again,
``[llm] replans`` times at most (default once), with the failure's reason and the state the
robot is in then, within the task's deadline. Every plan and why the earlier ones failed is
kept for the report.

Usage::

    outcome = carry_out(stack, "put the red cube on the shelf", stop_event, limit_s=120)
    outcome.success, outcome.plans
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtvla.errors import PlanningError
from rtvla.language import PlanContext

__all__ = ["TaskOutcome", "TaskReport", "carry_out", "evaluate_budgets", "nearest_place", "plan_context"]

logger = logging.getLogger(__name__)

_NEAR_M = 0.5  # within this of a place's pose, the robot is "at" it


@dataclass
class TaskOutcome:
    """How a task went: every plan tried (with source, latency and why it ended), the last
    execution, and whether it succeeded."""

    instruction: str
    plans: list[dict[str, Any]] = field(default_factory=list)
    execution: Any = None
    success: bool = False
    duration_s: float = 0.0
    planning_error: str | None = None

    @property
    def last_plan(self) -> dict[str, Any] | None:
        return self.plans[-1] if self.plans else None


def nearest_place(stack: Any) -> str | None:
    """The place the robot stands at (within 0.5 m), if any."""
    try:
        pose = stack.robot.read_state().base_pose
    except Exception:
        return None
    best, dist = None, math.inf
    for name, place in stack.embodiment.world.places.items():
        d = float(np.hypot(pose[0] - place.pose[0], pose[1] - place.pose[1]))
        if d < dist:
            best, dist = name, d
    return best if dist < _NEAR_M else None


def robot_stopped(stack: Any) -> bool:
    """Whether the control loop holds a latched stop now."""
    robot = stack.robot
    if hasattr(robot, "stopped"):
        return bool(robot.stopped)
    return bool(getattr(stack.control, "tripped", False))


def plan_context(stack: Any, failure: str | None = None) -> PlanContext:
    """What the planner is told: the world, the robot's place and load, what is seen now."""
    world = stack.embodiment.world.summary()
    scene = {k: world[k] for k in ("surfaces",) if world.get(k)}
    try:
        stack.world.update()
        seen = stack.world.observations()
    except Exception as exc:  # a planner context never fails a task
        logger.debug("no observations for the planner: %s", exc)
        seen = []
    holding = getattr(stack.robot, "holding", None)
    caps = stack.capabilities
    return PlanContext(capabilities=caps, robot_place=nearest_place(stack),
                       holding=holding if holding in caps.objects else None,
                       scene=scene, observations=seen, failure=failure)


def carry_out(stack: Any, instruction: str, stop: threading.Event, *, limit_s: float,
              replans: int = 1, on_plan: Callable[[Any], None] | None = None) -> TaskOutcome:
    """Plan ``instruction``, execute it, and re-plan after a failed step (see the module
    docstring). ``on_plan(result)`` sees each plan before it runs (the dashboard)."""
    out = TaskOutcome(instruction)
    t0 = time.monotonic()
    failure: str | None = None
    for attempt in range(replans + 1):
        try:
            result = stack.planner.plan_blocking(instruction, plan_context(stack, failure))
        except PlanningError as exc:
            out.planning_error = str(exc)
            if attempt == 0:
                break
            out.plans[-1]["replan_error"] = str(exc)
            break
        entry = {"attempt": attempt, "source": result.source, "plan": result.plan.to_json(),
                 "latency_s": result.latency_s, "degraded_reason": result.reason,
                 "after_failure": failure}
        out.plans.append(entry)
        if on_plan is not None:
            on_plan(result)
        if stop.is_set():
            break
        remaining = limit_s - (time.monotonic() - t0)
        if remaining <= 0.1:
            break
        execution = stack.executor.execute(result.plan, stop_event=stop, timeout_s=remaining)
        out.execution = execution
        entry["status"] = execution.status.value
        entry["failed_step"] = execution.failed_step
        entry["reason"] = execution.reason
        if execution.success:
            out.success = True
            break
        if (stop.is_set() or stack.critical_failure or execution.status.value != "failed"
                or attempt == replans):
            break
        failure = (f"step {execution.failed_step} ({execution.failed_action}) failed: "
                   f"{execution.reason}")
        if robot_stopped(stack):
            # A latched safe stop holds until someone decides otherwise: only a configured
            # recovery releases it; without one, a new plan could not move the robot anyway.
            if not getattr(stack.executor.ctx.settings, "recover_stops", False):
                entry["stopped"] = "the robot holds a latched stop; [executor] recover_stops is off"
                break
            if stack.control_in_process:
                stack.robot.reset_stop()  # through the control process's command channel
            else:
                stack.control.reset_stop()  # the loop also releases the robot's own latch
            stack.recorder.event("task", "recover", f"latched stop released to re-plan after: {failure}")
            failure += " (the robot had stopped; the stop was released)"
        stack.recorder.event("task", "replan", f"asking for a new plan: {failure}",
                             attempt=attempt + 1)
        logger.info("replanning after: %s", failure)
    out.duration_s = time.monotonic() - t0
    return out


def evaluate_budgets(report: dict[str, Any], max_miss_ratio: float) -> dict[str, dict[str, Any]]:
    """Per component: whether its budget was met over the run, and what failed.

    Individual breaches stay listed under ``violations``; a budget counts as *met* when the
    achieved rate is within 5 % of the minimum throughput, p99 latency is within the latency
    budget, missed cycles are at most ``max_miss_ratio`` of the cycles, and the mean CPU and
    peak memory (where measured) are within their ceilings.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, row in report["components"].items():
        b = row["budget"]
        failed = []
        count = row.get("count") or 0
        if (b.get("rate_hz") and b["min_throughput_hz"] > 0 and count > 1
                and row["achieved_hz"] < 0.95 * b["min_throughput_hz"]):
            failed.append(f"rate {row['achieved_hz']:.2f} Hz < {b['min_throughput_hz']:g} Hz")
        p99 = (row.get("latency_ms") or {}).get("p99")
        if p99 is not None and p99 > b["max_latency_ms"]:
            failed.append(f"p99 latency {p99:.2f} ms > {b['max_latency_ms']:g} ms")
        ticks = max(count, (row.get("latency_ms") or {}).get("count") or 0)
        if row.get("missed") and ticks and row["missed"] / (ticks + row["missed"]) > max_miss_ratio:
            failed.append(f"missed {row['missed']} of {ticks + row['missed']} cycles "
                          f"(> {max_miss_ratio:.2%})")
        if row.get("cpu_percent") and row["cpu_percent"] > b["max_cpu_percent"]:
            failed.append(f"mean CPU {row['cpu_percent']:.0f} % > {b['max_cpu_percent']:g} %")
        if row.get("memory_mb") and row["memory_mb"] > b["max_memory_mb"]:
            failed.append(f"memory {row['memory_mb']:.0f} MB > {b['max_memory_mb']:g} MB")
        out[name] = {"met": not failed, "critical": bool(b.get("critical")), "failed": failed}
    return out


@dataclass
class TaskReport:
    """What :meth:`Stack.run` returns: the task's outcome and every component's figures
    against its budget over the stack's life so far."""

    instruction: str
    success: bool
    duration_s: float
    reason: str
    plans: list[dict[str, Any]]
    components: dict[str, Any]
    budget_checks: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]

    @property
    def critical_budgets_met(self) -> bool | None:
        crit = [v["met"] for v in self.budget_checks.values() if v["critical"]]
        return all(crit) if crit else None

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)
