"""``rtvla bench soak``: the whole stack running tasks back to back, for minutes.

One stack is built and started once; tasks run one after another with a robot reset between
them (the simulator's scene back to its start). What a long-running robot would suffer
from is measured: the growth of the whole stack's resident memory (main process and its
children) after the first task, the control misses over all tasks, and the threads and open
files before the first and after the last task (a leak of either shows there).

Goals: ``rss_growth_mb`` <= 2, ``control_missed`` 0, threads and open files equal.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psutil

__all__ = ["TASKS", "bench_soak", "stack_footprint"]

logger = logging.getLogger(__name__)

TASKS = (
    "put the red cube in the blue bin",
    "bring the green cube to the table then say done",
    "put the blue cube in the green bin",
)


def stack_footprint(pid: int | None = None) -> dict[str, float]:
    """RSS (MB) of a process and all its children, its threads and its open files."""
    proc = psutil.Process(pid or os.getpid())
    rss = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            rss += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return {"rss_mb": rss / 2**20, "threads": float(proc.num_threads()), "open_files": float(proc.num_fds())}


def thread_names(pid: int | None = None) -> Counter[str]:
    """This process's threads by name: Python threads by their ``threading`` name, native
    ones (GL rasterizers, ONNX Runtime pools) by ``/proc/<pid>/task/*/comm``."""
    base = f"/proc/{pid or os.getpid()}/task"
    out: Counter[str] = Counter()
    python = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    try:
        tids = os.listdir(base)
    except OSError:
        return out
    for tid in tids:
        if tid.isdigit() and int(tid) in python:
            out[python[int(tid)]] += 1
            continue
        try:
            with open(f"{base}/{tid}/comm", encoding="utf-8") as f:
                out[f.read().strip()] += 1
        except OSError:
            continue
    return out


def bench_soak(minutes: float = 10.0, *, config: Any = None, tasks: tuple[str, ...] = TASKS,
               progress: Callable[[int, float, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run tasks for ``minutes`` on one stack; the result row (see the module docstring).
    ``progress(tasks_done, elapsed_s, last)`` is called after each task."""
    from rtvla.runtime.stack import Stack

    stack = Stack.from_config(config)
    per_task: list[dict[str, Any]] = []
    t_end = time.monotonic() + minutes * 60.0
    with stack:
        gc.collect()
        before = stack_footprint()
        names_before = thread_names()
        after_first: dict[str, float] | None = None
        t0 = time.monotonic()
        i = 0
        while True:
            instruction = tasks[i % len(tasks)]
            report = stack.run(instruction)
            missed = int(report.components.get("control", {}).get("missed", 0))
            per_task.append({"task": instruction, "success": report.success,
                             "duration_s": round(report.duration_s, 2), "control_missed_total": missed,
                             "reason": report.reason})
            i += 1
            stack.reset_robot()
            gc.collect()
            if after_first is None:
                after_first = stack_footprint()
            if progress is not None:
                progress(i, time.monotonic() - t0, per_task[-1])
            if time.monotonic() >= t_end or stack.critical_failure:
                break
        end = stack_footprint()
        names_after = thread_names()
    final_missed = int((stack.control_final or {}).get("missed", per_task[-1]["control_missed_total"]))
    assert after_first is not None
    return {
        "minutes": round((time.monotonic() - t0) / 60.0, 2),
        "tasks": len(per_task),
        "succeeded": sum(1 for t in per_task if t["success"]),
        "rss_growth_mb": round(end["rss_mb"] - after_first["rss_mb"], 2),
        "rss_mb": {"before": round(before["rss_mb"], 1), "after_first": round(after_first["rss_mb"], 1),
                   "after": round(end["rss_mb"], 1)},
        "control_missed": final_missed,
        "threads": {"before": int(before["threads"]), "after": int(end["threads"]),
                    # Which ones, by name, when the counts differ (a leak names itself).
                    "added": dict(names_after - names_before), "gone": dict(names_before - names_after)},
        "open_files": {"before": int(before["open_files"]), "after": int(end["open_files"])},
        "per_task": per_task,
        "critical_failure": stack.critical_failure,
    }
