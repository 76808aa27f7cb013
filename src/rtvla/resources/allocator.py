"""``ResourceAllocator``: admission control, priorities, preemption and a CPU-affinity plan.

Resources are fractional CPU cores (shared), memory in MB, and *dedicated* CPUs (a whole
core pinned to one component, taken out of the shared pool). Capacity is what the machine
offers this program (its allowed CPUs, available memory) minus a reserve. A request that
does not fit is refused with :class:`~rtvla.errors.ResourceError` naming what was short,
unless it is *critical*: then lower-priority *preemptible* allocations are shrunk toward
their minimum or, when shrinking is not enough, evicted (fewest evictions first), and their
``on_preempt`` callback is told so that the component or the adaptive optimizer can turn
its quality down. Releasing an allocation grows shrunk ones back (``on_restore``).

Usage::

    alloc = ResourceAllocator(sampler=PsutilSampler(), reserve_memory_mb=512)
    alloc.request("control", ResourceRequest(0.3, 100, priority=10, critical=True,
                                             exclusive_cpu=True))
    alloc.request("llm", ResourceRequest(1.0, 2000, priority=2, min_cpu_cores=0.2),
                  on_preempt=lambda p: optimizer.handle_preemption(p))
    plan = alloc.affinity_plan()          # {"control": (1,), "llm": (0,)} on 2 CPUs
    apply_affinity(plan, {"control": control_pid})   # the runtime applies it
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rtvla.errors import RealtimeSetupError, ResourceError
from rtvla.metrics import Recorder
from rtvla.resources.sampler import Capacity, PsutilSampler, Sampler
from rtvla.timing import MONOTONIC, Clock

__all__ = [
    "AffinityPlan",
    "Allocation",
    "InvalidResourceRequest",
    "Preemption",
    "ResourceAllocator",
    "ResourceRequest",
    "apply_affinity",
]

logger = logging.getLogger(__name__)

_EPS = 1e-9


class InvalidResourceRequest(ResourceError, ValueError):
    """A resource request with a malformed field (negative cores, priority out of range...)."""


@dataclass(frozen=True)
class ResourceRequest:
    """What a component asks for.

    Args:
        cpu_cores: shared CPU, in cores (fractional). Ignored for accounting when a
            dedicated CPU is granted (``exclusive_cpu``), which takes a whole core.
        memory_mb: resident memory.
        priority: 0..10, higher is more important.
        critical: may preempt lower-priority preemptible allocations; never preempted.
        preemptible: may be shrunk or evicted for a critical request (default: not critical).
        exclusive_cpu: wants a dedicated CPU for pinning (granted when > 1 CPU).
        min_cpu_cores, min_memory_mb: the floor when shrunk (default: no shrinking, evict only).
    """

    cpu_cores: float
    memory_mb: float
    priority: int = 5
    critical: bool = False
    preemptible: bool | None = None
    exclusive_cpu: bool = False
    min_cpu_cores: float | None = None
    min_memory_mb: float | None = None

    def __post_init__(self) -> None:
        def bad(msg: str) -> InvalidResourceRequest:
            return InvalidResourceRequest(f"resource request: {msg}")

        if not self.cpu_cores >= 0:
            raise bad(f"cpu_cores must be >= 0, got {self.cpu_cores}")
        if not self.memory_mb >= 0:
            raise bad(f"memory_mb must be >= 0, got {self.memory_mb}")
        if not 0 <= self.priority <= 10 or int(self.priority) != self.priority:
            raise bad(f"priority must be an integer in [0, 10], got {self.priority}")
        if self.exclusive_cpu and self.cpu_cores > 1.0:
            raise bad(f"exclusive_cpu gives one core; cpu_cores must be <= 1, got {self.cpu_cores}")
        preemptible = (not self.critical) if self.preemptible is None else bool(self.preemptible)
        if self.critical and preemptible:
            raise bad("a critical request cannot be preemptible")
        object.__setattr__(self, "preemptible", preemptible)
        min_cpu = self.cpu_cores if self.min_cpu_cores is None else self.min_cpu_cores
        min_mem = self.memory_mb if self.min_memory_mb is None else self.min_memory_mb
        if not 0 <= min_cpu <= self.cpu_cores:
            raise bad(f"min_cpu_cores must be in [0, cpu_cores={self.cpu_cores}], got {min_cpu}")
        if not 0 <= min_mem <= self.memory_mb:
            raise bad(f"min_memory_mb must be in [0, memory_mb={self.memory_mb}], got {min_mem}")
        object.__setattr__(self, "min_cpu_cores", float(min_cpu))
        object.__setattr__(self, "min_memory_mb", float(min_mem))


@dataclass(frozen=True)
class Preemption:
    """What a critical request took from a preemptible allocation."""

    component: str
    action: str  # "shrink" | "evict"
    for_component: str
    cpu_before: float
    cpu_after: float
    memory_before: float
    memory_after: float
    stamp_ns: int

    @property
    def reason(self) -> str:
        return (
            f"{self.action} {self.component} for critical {self.for_component}: cpu "
            f"{self.cpu_before:g}->{self.cpu_after:g} cores, memory "
            f"{self.memory_before:g}->{self.memory_after:g} MB"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.component, "action": self.action, "for": self.for_component,
            "cpu_before": self.cpu_before, "cpu_after": self.cpu_after,
            "memory_before": self.memory_before, "memory_after": self.memory_after,
            "stamp_ns": self.stamp_ns, "reason": self.reason,
        }


@dataclass
class Allocation:
    """A granted request; ``cpu_cores``/``memory_mb`` are what it holds now (less when shrunk)."""

    component: str
    request: ResourceRequest
    cpu_cores: float
    memory_mb: float
    cpu: int | None
    granted_ns: int
    on_preempt: Callable[[Preemption], None] | None = field(default=None, repr=False)
    on_restore: Callable[[Allocation], None] | None = field(default=None, repr=False)

    @property
    def dedicated(self) -> bool:
        return self.cpu is not None

    @property
    def shrunk(self) -> bool:
        r = self.request
        return self.cpu_cores < r.cpu_cores - _EPS or self.memory_mb < r.memory_mb - _EPS

    @property
    def shared_cpu(self) -> float:
        """Cores it takes from the shared pool (0 with a dedicated CPU)."""
        return 0.0 if self.dedicated else self.cpu_cores

    def as_dict(self) -> dict[str, Any]:
        r = self.request
        return {
            "cpu_cores": self.cpu_cores, "memory_mb": self.memory_mb, "cpu": self.cpu,
            "requested_cpu_cores": r.cpu_cores, "requested_memory_mb": r.memory_mb,
            "priority": r.priority, "critical": r.critical, "preemptible": r.preemptible,
            "shrunk": self.shrunk,
        }


@dataclass(frozen=True)
class AffinityPlan:
    """Which CPUs each component should run on: dedicated ones alone, the rest shared."""

    dedicated: dict[str, int]
    shared_cpus: tuple[int, ...]
    components: dict[str, tuple[int, ...]]
    notes: tuple[str, ...] = ()

    def cpus_for(self, component: str) -> tuple[int, ...]:
        """The CPU set of ``component`` (the shared CPUs for one without an allocation)."""
        return self.components.get(component, self.shared_cpus)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dedicated": dict(self.dedicated), "shared_cpus": list(self.shared_cpus),
            "components": {k: list(v) for k, v in self.components.items()}, "notes": list(self.notes),
        }


class ResourceAllocator:
    """Admission control and preemption over CPU cores, memory and dedicated CPUs.

    Args:
        capacity: the machine's offer; read from ``sampler`` (psutil by default) when omitted.
        sampler: source of the capacity when ``capacity`` is not given.
        reserve_cores: shared cores kept back for the OS and everything else.
        reserve_memory_mb: memory kept back from what was available at construction.
        cpu_oversubscription: shared CPU may be promised up to this factor of its cores
            (CPU is compressible; memory is not and is never oversubscribed).
        recorder: receives a ``preempted`` / ``restored`` event per preemption.
    """

    def __init__(
        self,
        capacity: Capacity | None = None,
        *,
        sampler: Sampler | None = None,
        reserve_cores: float = 0.0,
        reserve_memory_mb: float = 256.0,
        cpu_oversubscription: float = 1.0,
        recorder: Recorder | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        if capacity is None:
            capacity = (sampler if sampler is not None else PsutilSampler()).capacity()
        if not capacity.cpus:
            raise ResourceError("resource capacity lists no CPUs")
        if not reserve_cores >= 0 or reserve_cores >= len(capacity.cpus):
            raise ResourceError(
                f"reserve_cores must be in [0, {len(capacity.cpus)}), got {reserve_cores}"
            )
        if not reserve_memory_mb >= 0:
            raise ResourceError(f"reserve_memory_mb must be >= 0, got {reserve_memory_mb}")
        if not cpu_oversubscription >= 1.0:
            raise ResourceError(f"cpu_oversubscription must be >= 1, got {cpu_oversubscription}")
        self.capacity = capacity
        self.reserve_cores = float(reserve_cores)
        self.memory_capacity_mb = max(0.0, capacity.memory_available_mb - reserve_memory_mb)
        self.cpu_oversubscription = float(cpu_oversubscription)
        self.recorder = recorder
        self.clock = clock
        self._allocs: dict[str, Allocation] = {}
        self._lock = threading.Lock()
        self.preemptions: deque[Preemption] = deque(maxlen=500)
        self.refused = 0

    # -- capacity arithmetic --------------------------------------------------------------

    def _shared_capacity(self, dedicated: int) -> float:
        return max(0.0, len(self.capacity.cpus) - dedicated - self.reserve_cores) * self.cpu_oversubscription

    def _fits(self, allocs: list[Allocation]) -> tuple[bool, float, float, int]:
        """(fits, cpu over, memory over, dedicated over) for a candidate set of allocations."""
        dedicated = sum(1 for a in allocs if a.dedicated)
        cpu_over = sum(a.shared_cpu for a in allocs) - self._shared_capacity(dedicated)
        mem_over = sum(a.memory_mb for a in allocs) - self.memory_capacity_mb
        ded_over = dedicated - (len(self.capacity.cpus) - 1)
        ok = cpu_over <= _EPS and mem_over <= _EPS and ded_over <= 0
        return ok, max(0.0, cpu_over), max(0.0, mem_over), max(0, ded_over)

    def _free_cpu_id(self, allocs: list[Allocation]) -> int | None:
        taken = {a.cpu for a in allocs if a.dedicated}
        # Highest-numbered first: CPU 0 usually services most interrupts.
        for cpu in sorted(self.capacity.cpus, reverse=True):
            if cpu not in taken:
                return cpu
        return None

    # -- requests -------------------------------------------------------------------------

    def request(
        self,
        component: str,
        req: ResourceRequest,
        *,
        on_preempt: Callable[[Preemption], None] | None = None,
        on_restore: Callable[[Allocation], None] | None = None,
    ) -> Allocation:
        """Grant ``req`` to ``component`` or raise :class:`ResourceError` saying what was short."""
        now = self.clock.now_ns()
        with self._lock:
            if component in self._allocs:
                raise ResourceError(
                    f"{component!r} already holds an allocation; release it before requesting again"
                )
            current = list(self._allocs.values())
            cpu_id = None
            if req.exclusive_cpu and len(self.capacity.cpus) > 1:
                cpu_id = self._pick_dedicated(current, req)
            new = Allocation(component, req, req.cpu_cores, req.memory_mb, cpu_id, now,
                             on_preempt, on_restore)
            ok, cpu_over, mem_over, ded_over = self._fits([*current, new])
            preempted: list[tuple[Allocation, Preemption]] = []
            if not ok:
                plan = self._plan_preemption(current, new) if req.critical else None
                if plan is None:
                    self.refused += 1
                    raise ResourceError(self._refusal(component, req, cpu_over, mem_over, ded_over))
                for victim, cpu_after, mem_after in plan:
                    action = "evict" if cpu_after is None else "shrink"
                    p = Preemption(
                        victim.component, action, component, victim.cpu_cores,
                        0.0 if cpu_after is None else cpu_after, victim.memory_mb,
                        0.0 if mem_after is None else mem_after, now,
                    )
                    if cpu_after is None or mem_after is None:
                        del self._allocs[victim.component]
                    else:
                        victim.cpu_cores, victim.memory_mb = cpu_after, mem_after
                    self.preemptions.append(p)
                    preempted.append((victim, p))
            self._allocs[component] = new
        logger.info(
            "allocated %s: %.2f cores, %.0f MB%s", component, new.cpu_cores, new.memory_mb,
            f", dedicated CPU {new.cpu}" if new.dedicated else "",
        )
        for victim, p in preempted:
            self._notify_preempt(victim, p)
        return new

    def _pick_dedicated(self, current: list[Allocation], req: ResourceRequest) -> int | None:
        free = self._free_cpu_id(current)
        if free is not None and sum(1 for a in current if a.dedicated) < len(self.capacity.cpus) - 1:
            return free
        if req.critical:
            # Take the CPU of the lowest-priority preemptible dedicated holder (evicted below).
            holders = [a for a in current if a.dedicated and a.request.preemptible
                       and a.request.priority < req.priority]
            if holders:
                return min(holders, key=lambda a: a.request.priority).cpu
        return None  # no dedicated CPU: the request is accounted as shared

    def _victims(self, current: list[Allocation], new: Allocation) -> list[Allocation]:
        v = [a for a in current if a.request.preemptible and not a.request.critical
             and a.request.priority < new.request.priority]
        # Lowest priority first; among equals the most recent grant goes first.
        v.sort(key=lambda a: (a.request.priority, -a.granted_ns))
        if new.dedicated:  # the holder of the CPU we were given must go first
            v.sort(key=lambda a: a.cpu != new.cpu)
        return v

    def _plan_preemption(
        self, current: list[Allocation], new: Allocation
    ) -> list[tuple[Allocation, float | None, float | None]] | None:
        """Fewest evictions, then shrink as little as needed; None when nothing suffices."""
        victims = self._victims(current, new)
        if not victims:
            return None
        for k in range(len(victims) + 1):
            if new.dedicated and any(v.cpu == new.cpu for v in victims) and k == 0:
                continue  # the dedicated CPU's holder must be evicted
            evicted = victims[:k]
            kept = [a for a in current if a not in evicted]
            _, cpu_over, mem_over, ded_over = self._fits([*kept, new])
            if ded_over:
                continue
            plan: list[tuple[Allocation, float | None, float | None]] = [(v, None, None) for v in evicted]
            for v in victims[k:]:
                if cpu_over <= _EPS and mem_over <= _EPS:
                    break
                d_cpu = 0.0 if v.dedicated else min(cpu_over, v.cpu_cores - (v.request.min_cpu_cores or 0.0))
                d_mem = min(mem_over, v.memory_mb - (v.request.min_memory_mb or 0.0))
                d_cpu, d_mem = max(0.0, d_cpu), max(0.0, d_mem)
                if d_cpu > _EPS or d_mem > _EPS:
                    plan.append((v, v.cpu_cores - d_cpu, v.memory_mb - d_mem))
                    cpu_over -= d_cpu
                    mem_over -= d_mem
            if cpu_over <= _EPS and mem_over <= _EPS:
                return plan
        return None

    def _refusal(self, component: str, req: ResourceRequest, cpu_over: float, mem_over: float,
                 ded_over: int) -> str:
        short = []
        if cpu_over > _EPS:
            short.append(f"{cpu_over:.2f} CPU cores short")
        if mem_over > _EPS:
            short.append(f"{mem_over:.0f} MB memory short")
        if ded_over > 0:
            short.append("no CPU left to dedicate")
        u = self._totals_locked()
        how = (
            "no lower-priority preemptible allocation can make room"
            if req.critical else "only critical requests may preempt"
        )
        return (
            f"resource request of {component!r} refused ({', '.join(short)}): asked "
            f"{req.cpu_cores:g} cores, {req.memory_mb:g} MB; free {u['cpu_free']:.2f} cores, "
            f"{u['memory_free_mb']:.0f} MB of {u['cpu_capacity']:.2f} cores, "
            f"{self.memory_capacity_mb:.0f} MB; {how}"
        )

    def _notify_preempt(self, victim: Allocation, p: Preemption) -> None:
        logger.warning("resource preemption: %s", p.reason)
        if self.recorder is not None:
            detail = {k: v for k, v in p.as_dict().items() if k not in ("component", "reason")}
            self.recorder.event(victim.component, "preempted", p.reason, **detail)
        if victim.on_preempt is not None:
            try:
                victim.on_preempt(p)
            except Exception:
                logger.exception("on_preempt callback of %s failed", victim.component)

    def release(self, component: str) -> Allocation:
        """Give back ``component``'s allocation; shrunk allocations grow back into the room."""
        with self._lock:
            alloc = self._allocs.pop(component, None)
            if alloc is None:
                raise ResourceError(
                    f"release({component!r}): no such allocation; held: {sorted(self._allocs) or 'none'}"
                )
            restored = self._restore_locked()
        logger.info("released %s", component)
        for a in restored:
            if self.recorder is not None:
                self.recorder.event(a.component, "restored",
                                    f"{a.component} grown back to {a.cpu_cores:g} cores, {a.memory_mb:g} MB")
            if a.on_restore is not None:
                try:
                    a.on_restore(a)
                except Exception:
                    logger.exception("on_restore callback of %s failed", a.component)
        return alloc

    def _restore_locked(self) -> list[Allocation]:
        restored = []
        for a in sorted(self._allocs.values(), key=lambda x: -x.request.priority):
            if not a.shrunk:
                continue
            others = [b for b in self._allocs.values() if b is not a]
            trial = replace(a, cpu_cores=a.request.cpu_cores, memory_mb=a.request.memory_mb)
            if self._fits([*others, trial])[0]:
                a.cpu_cores, a.memory_mb = trial.cpu_cores, trial.memory_mb
                restored.append(a)
        return restored

    # -- reading --------------------------------------------------------------------------

    def get(self, component: str) -> Allocation | None:
        with self._lock:
            return self._allocs.get(component)

    def allocations(self) -> dict[str, Allocation]:
        with self._lock:
            return dict(self._allocs)

    def _totals_locked(self) -> dict[str, float]:
        allocs = list(self._allocs.values())
        dedicated = sum(1 for a in allocs if a.dedicated)
        cap = self._shared_capacity(dedicated)
        cpu = sum(a.shared_cpu for a in allocs)
        mem = sum(a.memory_mb for a in allocs)
        return {
            "cpu_capacity": cap, "cpu_allocated": cpu, "cpu_free": max(0.0, cap - cpu),
            "memory_capacity_mb": self.memory_capacity_mb, "memory_allocated_mb": mem,
            "memory_free_mb": max(0.0, self.memory_capacity_mb - mem),
            "dedicated_cpus": float(dedicated),
        }

    def utilization(self, measured_cpu: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Capacity, allocated and free resources, each allocation and recent preemptions.

        ``measured_cpu`` (component -> percent of one core, e.g. from the system monitor's
        latest sample) adds each allocation's measured use beside what it was granted.
        """
        with self._lock:
            totals = self._totals_locked()
            rows = {n: a.as_dict() for n, a in self._allocs.items()}
            preemptions = [p.as_dict() for p in self.preemptions]
        if measured_cpu:
            for name, row in rows.items():
                if name in measured_cpu:
                    row["measured_cpu_cores"] = measured_cpu[name] / 100.0
        cap = totals["cpu_capacity"]
        return {
            **totals,
            "cpus": list(self.capacity.cpus),
            "cpu_utilization": totals["cpu_allocated"] / cap if cap > 0 else 0.0,
            "memory_utilization": (
                totals["memory_allocated_mb"] / self.memory_capacity_mb if self.memory_capacity_mb > 0 else 0.0
            ),
            "allocations": rows,
            "preemptions": preemptions,
            "refused": self.refused,
        }

    def affinity_plan(self) -> AffinityPlan:
        """Dedicated CPUs for the components granted one; everyone else shares the rest."""
        with self._lock:
            allocs = list(self._allocs.values())
        dedicated = {a.component: a.cpu for a in allocs if a.cpu is not None}
        taken = set(dedicated.values())
        shared = tuple(c for c in self.capacity.cpus if c not in taken) or tuple(self.capacity.cpus)
        notes = []
        for a in allocs:
            if a.request.exclusive_cpu and a.cpu is None:
                notes.append(
                    f"{a.component} asked for a dedicated CPU but the machine offers "
                    f"{len(self.capacity.cpus)} CPU(s) with none to spare; it shares {list(shared)}"
                )
        comps = {a.component: ((a.cpu,) if a.cpu is not None else shared) for a in allocs}
        return AffinityPlan(dedicated, shared, comps, tuple(notes))


def apply_affinity(
    plan: AffinityPlan, targets: Mapping[str, int], *, strict: bool = False
) -> dict[str, str]:
    """Pin each ``component -> pid or native thread id`` to its CPUs with ``sched_setaffinity``.

    Returns ``{component: "cpus [..]" | "refused: why"}``; with ``strict`` a refusal raises
    :class:`~rtvla.errors.RealtimeSetupError`.
    """
    out: dict[str, str] = {}
    for component, ident in targets.items():
        cpus = plan.cpus_for(component)
        try:
            os.sched_setaffinity(int(ident), set(cpus))
            out[component] = f"cpus {list(cpus)}"
        except (AttributeError, OSError, ValueError) as exc:
            why = f"sched_setaffinity({ident}, {list(cpus)}) failed: {exc}"
            if strict:
                raise RealtimeSetupError(f"CPU affinity of {component!r} refused: {why}") from exc
            logger.warning("CPU affinity of %s not applied: %s", component, why)
            out[component] = f"refused: {why}"
    return out
