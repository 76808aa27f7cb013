"""Resources enforced, not only counted.

* **Admission has a consequence.** Each component asks the :class:`ResourceAllocator` for its
  request. A refused one runs in its degraded configuration (its first knob with a cheaper
  value turned one step: perception's resolution, the planner's lighter model or shorter
  answers) on its minimum request, or, with ``[resources] strict = true``, the run refuses
  to start. The report's ``admission`` table says which, per component.
* **Affinity is applied.** Thread-placed components' threads (and the threads they start,
  such as a detector worker) are pinned with ``os.sched_setaffinity(native_id, cpus)`` to
  the CPUs the allocator planned for them.
* **cgroup v2 limits** for components in their own process: where ``/sys/fs/cgroup`` is a
  writable cgroup v2 hierarchy with the ``cpu`` and ``memory`` controllers, the process is
  moved to ``rtvla-<pid>/<component>`` with ``cpu.max`` and ``memory.max`` from its budget;
  elsewhere the report says why not (cgroup v1, read-only, controller missing).

Usage::

    table = admit(allocator, {"perception": (request, pipeline)}, budget_of, strict=False,
                  recorder=rec)
    pin_current_thread("perception", plan)
    cgroup_limits("control", pid, budget)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rtvla.errors import ResourceError, RuntimeStackError

__all__ = ["admit", "cgroup_limits", "cgroup_release", "pin_current_thread"]

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _degrade(component: Any) -> str | None:
    """Turn the component's first knob that has a cheaper value one step; what changed."""
    knobs = getattr(component, "knobs", None) or {}
    for knob in knobs.values():
        if knob.index + 1 < knob.levels:
            before = knob.value
            knob.set_index(knob.index + 1)
            return f"{knob.name} {before!r} -> {knob.value!r}"
    return None


def _minimum(req: Any) -> Any:
    """The request's floor: its declared minimum, else half of what it asked."""
    cpu = req.min_cpu_cores if req.min_cpu_cores is not None else req.cpu_cores / 2
    mem = req.min_memory_mb if req.min_memory_mb is not None else req.memory_mb / 2
    return dataclasses.replace(req, cpu_cores=cpu, memory_mb=mem, exclusive_cpu=False)


def admit(allocator: Any, requests: Mapping[str, tuple[Any, Any]], *, strict: bool,
          recorder: Any, on_preempt: Callable[[Any], None] | None = None) -> dict[str, dict[str, Any]]:
    """Request every component's resources; ``requests``: name -> (request, component or
    None). Returns the admission table; raises :class:`RuntimeStackError` with ``strict``."""
    table: dict[str, dict[str, Any]] = {}
    for name, (req, component) in requests.items():
        try:
            allocator.request(name, req, on_preempt=on_preempt)
            table[name] = {"admitted": "full", "cpu_cores": req.cpu_cores, "memory_mb": req.memory_mb}
            continue
        except ResourceError as exc:
            refusal = str(exc)
        if strict:
            raise RuntimeStackError(f"resources.strict: {refusal}")
        change = _degrade(component) if component is not None else None
        low = _minimum(req)
        try:
            allocator.request(name, low, on_preempt=on_preempt)
            granted = f"its minimum ({low.cpu_cores:g} cores, {low.memory_mb:g} MB)"
            row = {"admitted": "degraded", "cpu_cores": low.cpu_cores, "memory_mb": low.memory_mb}
        except ResourceError as exc2:
            granted = f"no allocation ({exc2})"
            row = {"admitted": "refused", "cpu_cores": 0.0, "memory_mb": 0.0}
        consequence = (f"runs degraded ({change}) on {granted}" if change
                       else f"has no cheaper configuration; runs as configured on {granted}")
        row.update(refusal=refusal, consequence=consequence)
        table[name] = row
        recorder.event(name, "admission", f"resource request refused: {refusal}; {consequence}",
                       admitted=row["admitted"])
    return table


def pin_current_thread(cpus: list[int] | tuple[int, ...] | None) -> str:
    """Pin the calling thread (by native id) to ``cpus``; what was done."""
    if not cpus:
        return "not pinned"
    tid = threading.get_native_id()
    try:
        os.sched_setaffinity(tid, set(cpus))
        return f"cpus {sorted(cpus)}"
    except OSError as exc:
        logger.warning("could not pin thread %d to CPUs %s: %s", tid, cpus, exc)
        return f"refused: {exc}"


def _cgroup_v2_writable(root: Path) -> str | None:
    """None when ``root`` is a writable cgroup v2 hierarchy with cpu and memory; else why not."""
    controllers = root / "cgroup.controllers"
    if not controllers.is_file():
        return f"{root} is not a cgroup v2 hierarchy (no cgroup.controllers; cgroup v1 or none)"
    have = set(controllers.read_text().split())
    missing = {"cpu", "memory"} - have
    if missing:
        return f"cgroup v2 at {root} lacks the {', '.join(sorted(missing))} controller(s)"
    if not os.access(root, os.W_OK):
        return f"cgroup v2 at {root} is not writable by this user"
    return None


def cgroup_limits(component: str, pid: int, *, cpu_cores: float, memory_mb: float,
                  root: Path = CGROUP_ROOT) -> dict[str, Any]:
    """Put ``pid`` into its own cgroup with ``cpu.max`` and ``memory.max``; what happened."""
    why = _cgroup_v2_writable(root)
    if why is not None:
        return {"applied": False, "reason": why}
    group = root / f"rtvla-{os.getpid()}" / component
    try:
        group.parent.mkdir(exist_ok=True)
        # Controllers must be enabled for the children of the parent group first.
        (group.parent / "cgroup.subtree_control").write_text("+cpu +memory")
        group.mkdir(exist_ok=True)
        period = 100_000
        (group / "cpu.max").write_text(f"{max(1000, int(cpu_cores * period))} {period}")
        (group / "memory.max").write_text(str(int(memory_mb * 2**20)))
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        return {"applied": False, "reason": f"writing {group}: {exc}"}
    return {"applied": True, "group": str(group), "cpu_max": f"{cpu_cores:g} cores",
            "memory_max_mb": memory_mb}


def cgroup_release(info: dict[str, Any]) -> None:
    """Remove a cgroup made by :func:`cgroup_limits` once its process has exited."""
    if not info.get("applied"):
        return
    group = Path(info["group"])
    for path in (group, group.parent):
        try:
            path.rmdir()
        except OSError as exc:  # still populated (another component), or already gone
            logger.debug("cgroup %s not removed: %s", path, exc)
