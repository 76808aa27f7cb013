"""The learned pick executed by the control process's chunk scheduler (process placement)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rtvla.action.executor import ExecStatus
from rtvla.config import load_config
from rtvla.errors import PartError, PolicyError
from rtvla.policy.pick.scheduled import (
    FirstSteps,
    ScheduledPick,
    ScheduledPickSettings,
    open_pick_policy,
    pick_model_metadata,
)
from rtvla.runtime.stack import Stack

pytestmark = pytest.mark.slow

TASK = "put the red cube in the blue bin"


def _stack(tmp_path: Path, toml: str = "") -> Stack:
    path = tmp_path / "rtvla.toml"
    path.write_text(toml)
    return Stack.from_config(load_config(path, environ={}, search_cwd=False), policy="builtin:pick")


def test_the_default_task_with_the_pick_scheduled_in_the_control_process(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    assert stack.control_in_process and stack.policy_process is not None
    pick = stack.executor.skills["manipulate"].__self__
    assert isinstance(pick, ScheduledPick)
    t0 = time.monotonic()
    with stack:
        report = stack.run(TASK)
    assert report.success, report.reason
    assert time.monotonic() - t0 < 90
    assert pick.last_stats["chunks"] >= 10 and pick.last_stats["stops"] == 0
    section = stack.policy_report()
    assert section is not None and section["placement"] == "control process"
    sched = section["scheduler"]
    # The control process's scheduler took the chunks and executed them tick by tick.
    assert sched["chunks"] >= 10 and sched["requests"] >= sched["chunks"]
    assert sched["action_ticks"] >= 100
    assert sched["starvation_stops"] == 0 and sched["rejected"] == 0
    assert sched["merge"] == "ensemble" and not sched["engaged"]
    assert sched["chunk_ticks"] == 50  # the first 5 of each 10-action chunk, at 10 Hz
    assert "jumps" not in sched
    assert set(sched["delay_ms"]) == {"p50", "p95", "max"}
    assert stack.control_stats()["policy"] == sched  # report.json's control section carries them too
    assert section["process"]["errors"] == 0
    # Stopped with the stack (bounded), and told so.
    assert stack.policy_process.check_alive() is not None
    assert report.components["pick_policy"]["count"] >= 10  # the skill's record of executed chunks
    gauges = report.components["control"]["gauges"]  # relayed live from the control process
    assert gauges["policy_chunks"] >= 10 and gauges["policy_stops"] == 0


def test_a_policy_process_killed_mid_pick_starves_the_scheduler_and_fails_the_step(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    proc = stack.policy_process
    killed = threading.Event()
    done = threading.Event()

    def kill_mid_pick() -> None:
        # Once the scheduler has executed a few chunks, the policy dies.
        while not done.is_set():
            if stack.control.live_stats().get("policy_chunks", 0.0) >= 3:
                os.kill(proc.pid, signal.SIGKILL)
                killed.set()
                return
            done.wait(0.02)

    with stack:
        killer = threading.Thread(target=kill_mid_pick, daemon=True)
        killer.start()
        t0 = time.monotonic()
        try:
            report = stack.run(TASK, timeout_s=60)
        finally:
            done.set()
            killer.join(5)
        assert time.monotonic() - t0 < 60  # the run ended, it did not hang
        assert killed.is_set()
        assert not report.success
        assert stack.robot.stopped  # the safe stop latched
    failed = [p for p in stack.progress if p.status is ExecStatus.FAILED and p.name.startswith("manipulate(pick")]
    assert failed, [(p.name, p.status, p.reason) for p in stack.progress]
    why = failed[0].reason
    assert "starved" in why and "latched a safe stop" in why and "killed by signal 9" in why, why
    sched = stack.policy_report()["scheduler"]
    assert sched["starvation_stops"] == 1 and sched["starved_ticks"] > 0
    assert "starved" in sched["stop_reason"]


def test_bad_sources_and_settings_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(PartError, match=r"missing\.onnx"):
        Stack.from_config(load_config(None, environ={}, search_cwd=False), policy=str(tmp_path / "missing.onnx"))
    with pytest.raises(PolicyError, match="policy server"):
        pick_model_metadata("ws://127.0.0.1:8000")
    with pytest.raises(PolicyError, match="grasp_timeout_s"):
        ScheduledPickSettings(grasp_timeout_s=0)
    policy = open_pick_policy("builtin:pick", 5)
    assert policy.metadata.horizon == 5
    obs = {"observation/joint_position": np.zeros(5, np.float32), "observation/gripper_position": np.zeros(1, np.float32),
           "observation/target_position": np.array([0.5, 0.0, 0.47], np.float32),
           "observation/object_onehot": np.array([1, 0, 0], np.float32)}
    assert policy.infer(obs)["actions"].shape == (5, 6)
    with pytest.raises(PolicyError, match="chunk_steps"):
        FirstSteps(policy.policy, 11)
    policy.close()
    with pytest.raises(PolicyError, match="no policy link"):
        ScheduledPick(object(), object(), metadata={"object_names": ["red_cube"]})


def test_thread_placement_keeps_the_executor_side_pick(tmp_path: Path) -> None:
    from rtvla.policy.pick.skill import PolicyPick

    stack = _stack(tmp_path, '[policy]\nplacement = "thread"\n')
    try:
        assert stack.policy_process is None and stack.control.policy is None
        assert isinstance(stack.executor.skills["manipulate"].__self__, PolicyPick)
        assert stack.policy_report() == {"source": "builtin:pick", "runs": "manipulate(pick ...)",
                                         "placement": "executor"}
    finally:
        stack.stop()
        stack.embodiment.close()
