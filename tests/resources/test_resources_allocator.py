from __future__ import annotations

import os
import threading

import pytest

from rtvla.config import DEFAULT_BUDGETS
from rtvla.errors import ConfigError, ResourceError
from rtvla.metrics import Recorder
from rtvla.resources import (
    Capacity,
    InvalidResourceRequest,
    ResourceAllocator,
    ResourceRequest,
    ResourcesConfig,
    apply_affinity,
    request_from_budget,
)
from rtvla.timing import FakeClock


def _alloc(cpus=(0, 1), memory_mb=4096.0, **kw) -> ResourceAllocator:
    kw.setdefault("reserve_memory_mb", 0.0)
    return ResourceAllocator(Capacity(tuple(cpus), memory_mb, memory_mb), clock=FakeClock(), **kw)


def test_admission_grants_until_capacity_then_refuses_with_what_was_short():
    a = _alloc(cpus=(0, 1, 2, 3), memory_mb=1000)
    a.request("perception", ResourceRequest(2.0, 600, priority=8))
    a.request("navigation", ResourceRequest(1.5, 300, priority=7))
    with pytest.raises(ResourceError) as err:
        a.request("llm", ResourceRequest(1.0, 200, priority=2))
    msg = str(err.value)
    assert "'llm' refused" in msg and "0.50 CPU cores short" in msg and "100 MB memory short" in msg
    assert "only critical requests may preempt" in msg
    assert a.refused == 1
    u = a.utilization()
    assert u["cpu_allocated"] == pytest.approx(3.5)
    assert u["memory_free_mb"] == pytest.approx(100)
    assert set(u["allocations"]) == {"perception", "navigation"}


def test_reserve_and_oversubscription_shape_capacity():
    a = ResourceAllocator(Capacity((0, 1), 2000, 1500), reserve_cores=0.5, reserve_memory_mb=500,
                          cpu_oversubscription=2.0)
    assert a.memory_capacity_mb == pytest.approx(1000)
    assert a.utilization()["cpu_capacity"] == pytest.approx(3.0)  # (2 - 0.5) * 2
    a.request("x", ResourceRequest(2.9, 100))
    with pytest.raises(ResourceError):
        a.request("y", ResourceRequest(0.2, 100))


def test_critical_request_shrinks_lowest_priority_preemptible_first_and_calls_back():
    a = _alloc(cpus=(0, 1), memory_mb=2000)
    calls = []
    a.request("llm", ResourceRequest(1.0, 800, priority=2, min_cpu_cores=0.25, min_memory_mb=400),
              on_preempt=calls.append)
    a.request("viz", ResourceRequest(0.5, 400, priority=4, min_cpu_cores=0.1), on_preempt=calls.append)
    a.request("navigation", ResourceRequest(0.8, 1000, priority=9, critical=True))
    # 0.3 cores and 200 MB short: taken from llm (priority 2) alone, by shrinking
    assert [p.component for p in calls] == ["llm"]
    p = calls[0]
    assert p.action == "shrink" and p.for_component == "navigation"
    assert p.cpu_after == pytest.approx(0.7) and p.memory_after == pytest.approx(600)
    assert a.get("llm").shrunk and not a.get("viz").shrunk
    assert "shrink llm for critical navigation" in p.reason


def test_critical_request_evicts_when_shrinking_is_not_enough():
    rec = Recorder(clock=FakeClock())
    a = _alloc(cpus=(0, 1), memory_mb=2000, recorder=rec)
    seen = []
    a.request("llm", ResourceRequest(1.2, 1500, priority=2), on_preempt=seen.append)  # not shrinkable
    a.request("perception", ResourceRequest(0.9, 1000, priority=9, critical=True))
    assert seen and seen[0].action == "evict"
    assert a.get("llm") is None
    assert a.get("perception") is not None
    assert any(e.kind == "preempted" and e.component == "llm" for e in rec.events)
    assert a.utilization()["preemptions"][0]["action"] == "evict"


def test_critical_never_preempts_critical_or_non_preemptible_or_higher_priority():
    a = _alloc(cpus=(0, 1), memory_mb=1000)
    a.request("control", ResourceRequest(0.5, 100, priority=10, critical=True))
    a.request("logger", ResourceRequest(1.0, 100, priority=1, preemptible=False))
    a.request("perception", ResourceRequest(0.5, 100, priority=9, critical=True))
    with pytest.raises(ResourceError, match="no lower-priority preemptible allocation"):
        a.request("navigation", ResourceRequest(0.5, 100, priority=9, critical=True))
    assert set(a.allocations()) == {"control", "logger", "perception"}


def test_non_critical_request_never_preempts():
    a = _alloc(cpus=(0, 1), memory_mb=1000)
    a.request("llm", ResourceRequest(2.0, 100, priority=1))
    with pytest.raises(ResourceError):
        a.request("viz", ResourceRequest(0.5, 100, priority=8))
    assert a.get("llm").cpu_cores == 2.0


def test_fewest_evictions_are_chosen():
    a = _alloc(cpus=(0, 1, 2, 3), memory_mb=10_000)
    a.request("a", ResourceRequest(1.0, 10, priority=1))
    a.request("b", ResourceRequest(1.0, 10, priority=2))
    a.request("big", ResourceRequest(2.0, 10, priority=3))
    a.request("critical", ResourceRequest(2.0, 10, priority=9, critical=True))
    # evicting a then b (lowest priority first) frees exactly 2 cores; big stays untouched
    assert set(a.allocations()) == {"big", "critical"}


def test_release_grows_shrunk_allocations_back():
    a = _alloc(cpus=(0, 1), memory_mb=2000)
    restored = []
    a.request("llm", ResourceRequest(1.5, 500, priority=2, min_cpu_cores=0.5), on_restore=restored.append)
    a.request("navigation", ResourceRequest(1.0, 500, priority=9, critical=True))
    assert a.get("llm").cpu_cores == pytest.approx(1.0)
    a.release("navigation")
    assert a.get("llm").cpu_cores == pytest.approx(1.5)
    assert restored and restored[0].component == "llm"
    with pytest.raises(ResourceError, match=r"release\('navigation'\): no such allocation"):
        a.release("navigation")
    with pytest.raises(ResourceError, match="already holds an allocation"):
        a.request("llm", ResourceRequest(0.1, 1))


def test_affinity_plan_on_two_cores_gives_control_a_dedicated_cpu():
    a = _alloc(cpus=(0, 1), memory_mb=4000)
    a.request("control", ResourceRequest(0.3, 100, priority=10, critical=True, exclusive_cpu=True))
    a.request("perception", ResourceRequest(0.7, 800, priority=9, critical=True))
    a.request("llm", ResourceRequest(0.3, 500, priority=2))
    plan = a.affinity_plan()
    assert plan.dedicated == {"control": 1}
    assert plan.shared_cpus == (0,)
    assert plan.cpus_for("control") == (1,)
    assert plan.cpus_for("perception") == (0,) and plan.cpus_for("llm") == (0,)
    assert plan.cpus_for("unallocated") == (0,)
    # The dedicated core left the shared pool: one shared core remains.
    assert a.utilization()["cpu_capacity"] == pytest.approx(1.0)
    with pytest.raises(ResourceError, match="CPU cores short"):
        a.request("viz", ResourceRequest(0.5, 10, priority=1))


def test_single_cpu_cannot_dedicate_and_says_so():
    a = _alloc(cpus=(0,), memory_mb=4000)
    a.request("control", ResourceRequest(0.3, 100, priority=10, critical=True, exclusive_cpu=True))
    plan = a.affinity_plan()
    assert plan.dedicated == {}
    assert plan.cpus_for("control") == (0,)
    assert "none to spare" in plan.notes[0]


def test_critical_dedicated_request_takes_cpu_from_preemptible_holder():
    a = _alloc(cpus=(0, 1), memory_mb=4000)
    evicted = []
    a.request("encoder", ResourceRequest(0.5, 100, priority=3, exclusive_cpu=True), on_preempt=evicted.append)
    assert a.affinity_plan().dedicated == {"encoder": 1}
    a.request("control", ResourceRequest(0.3, 100, priority=10, critical=True, exclusive_cpu=True))
    assert [p.action for p in evicted] == ["evict"]
    assert a.affinity_plan().dedicated == {"control": 1}


def test_apply_affinity_pins_a_thread_and_reports_refusals():
    a = _alloc(cpus=tuple(sorted(os.sched_getaffinity(0))), memory_mb=4000)
    a.request("worker", ResourceRequest(0.1, 10))
    plan = a.affinity_plan()
    result: dict[str, object] = {}

    def body() -> None:
        tid = threading.get_native_id()
        result["outcome"] = apply_affinity(plan, {"worker": tid})
        result["affinity"] = os.sched_getaffinity(0)

    t = threading.Thread(target=body)
    t.start()
    t.join(5)
    assert result["outcome"] == {"worker": f"cpus {list(plan.cpus_for('worker'))}"}
    assert result["affinity"] == set(plan.cpus_for("worker"))
    bad = apply_affinity(plan, {"ghost": 2**22 + 12345})
    assert bad["ghost"].startswith("refused:")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cpu_cores": -1, "memory_mb": 1}, "cpu_cores must be >= 0"),
        ({"cpu_cores": 1, "memory_mb": 1, "priority": 11}, r"priority must be an integer in \[0, 10\]"),
        ({"cpu_cores": 1, "memory_mb": 1, "critical": True, "preemptible": True}, "cannot be preemptible"),
        ({"cpu_cores": 2, "memory_mb": 1, "exclusive_cpu": True}, "cpu_cores must be <= 1"),
        ({"cpu_cores": 1, "memory_mb": 1, "min_cpu_cores": 2}, "min_cpu_cores must be in"),
    ],
)
def test_malformed_requests_name_the_field(kwargs, match):
    with pytest.raises(InvalidResourceRequest, match=match):
        ResourceRequest(**kwargs)


def test_resources_config_validates_and_builds():
    rc = ResourcesConfig.from_section({
        "monitor_hz": 20, "history_s": 5, "reserve_memory_mb": 0,
        "requests": {"perception": {"cpu_cores": 0.7, "memory_mb": 800, "priority": 8, "critical": True}},
    })
    mon = rc.build_monitor(sampler=None)  # type: ignore[arg-type]
    assert mon.period_s == pytest.approx(0.05) and mon.capacity == 100
    assert rc.request_for("perception", DEFAULT_BUDGETS["perception"]).priority == 8
    assert rc.request_for("control", DEFAULT_BUDGETS["control"]).exclusive_cpu
    alloc = rc.build_allocator(capacity=Capacity((0, 1), 8000, 8000))
    assert alloc.memory_capacity_mb == pytest.approx(8000)
    with pytest.raises(ConfigError, match=r"resources\.monitor_hz"):
        ResourcesConfig.from_section({"monitor_hz": 0})
    with pytest.raises(ConfigError, match=r"resources.requests.x.bogus: unknown key"):
        ResourcesConfig.from_section({"requests": {"x": {"cpu_cores": 1, "memory_mb": 1, "bogus": 1}}})
    with pytest.raises(ConfigError, match=r"resources\.requests\.x: .*cannot be preemptible"):
        ResourcesConfig.from_section(
            {"requests": {"x": {"cpu_cores": 1, "memory_mb": 1, "critical": True, "preemptible": True}}})


def test_request_from_budget_marks_critical_and_shrinkable():
    llm = request_from_budget("llm", DEFAULT_BUDGETS["llm"])
    assert not llm.critical and llm.preemptible and llm.min_cpu_cores == pytest.approx(0.45)
    control = request_from_budget("control", DEFAULT_BUDGETS["control"])
    assert control.critical and control.exclusive_cpu and control.priority == 10
