"""Admission with consequences, thread affinity, cgroup v2 detection."""

from __future__ import annotations

import os
import threading

import pytest

from rtvla.component import Knob
from rtvla.errors import RuntimeStackError
from rtvla.metrics import Recorder
from rtvla.resources import ResourceAllocator
from rtvla.resources.allocator import ResourceRequest
from rtvla.resources.sampler import Capacity
from rtvla.runtime.admission import _cgroup_v2_writable, admit, cgroup_limits, pin_current_thread


class Part:
    def __init__(self) -> None:
        self.seen = []
        self.knobs = {"resolution": Knob("resolution", ((320, 240), (240, 180)), on_change=self.seen.append)}


def _allocator(reserve: float) -> ResourceAllocator:
    """One CPU, of which ``reserve`` cores are held back."""
    return ResourceAllocator(Capacity((0,), 4000, 4000), reserve_cores=reserve, reserve_memory_mb=0,
                             recorder=Recorder())


def test_a_refused_component_runs_degraded_on_its_minimum():
    rec = Recorder()
    alloc = _allocator(0.0)
    part = Part()
    table = admit(alloc, {"nav": (ResourceRequest(0.8, 100, critical=True), None),
                          "perception": (ResourceRequest(0.6, 100, min_cpu_cores=0.2), part)},
                  strict=False, recorder=rec)
    assert table["nav"]["admitted"] == "full"
    row = table["perception"]
    assert row["admitted"] == "degraded" and row["cpu_cores"] == 0.2
    assert "resolution (320, 240) -> (240, 180)" in row["consequence"]
    assert part.seen == [(240, 180)]  # the component really runs at the lower resolution
    assert [e.kind for e in rec.events if e.component == "perception"] == ["admission"]


def test_strict_refuses_to_start():
    with pytest.raises(RuntimeStackError, match=r"resources\.strict"):
        admit(_allocator(0.5), {"perception": (ResourceRequest(0.6, 100), Part())}, strict=True,
              recorder=Recorder())


def test_pin_current_thread_applies_affinity_to_that_thread_only():
    cpus = sorted(os.sched_getaffinity(0))
    out = {}

    def worker():
        out["done"] = pin_current_thread([cpus[0]])
        out["mine"] = os.sched_getaffinity(threading.get_native_id())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert out["done"] == f"cpus [{cpus[0]}]" and out["mine"] == {cpus[0]}
    assert sorted(os.sched_getaffinity(0)) == cpus  # the rest of the process is untouched


def test_cgroup_v2_needs_a_writable_v2_hierarchy(tmp_path):
    assert "not a cgroup v2 hierarchy" in _cgroup_v2_writable(tmp_path)
    (tmp_path / "cgroup.controllers").write_text("cpuset io pids\n")
    assert "lacks the cpu, memory" in _cgroup_v2_writable(tmp_path)
    info = cgroup_limits("control", os.getpid(), cpu_cores=0.8, memory_mb=100, root=tmp_path)
    assert info["applied"] is False and "lacks" in info["reason"]
