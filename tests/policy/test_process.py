"""PolicyProcess: a real spawned child serving chunks through shared memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

from rtvla.errors import PolicyError
from rtvla.policy import OnnxPolicy, PolicyProcess
from rtvla.policy.chunk_channel import spec_to_wire
from rtvla.testing.policy_server import Behaviour, ScriptedPolicyServer


@pytest.fixture(scope="module")
def proc(linear_onnx):
    cpu = sorted(os.sched_getaffinity(0))[-1]
    with PolicyProcess(str(linear_onnx), cpus=[cpu]) as p:
        assert psutil.Process(p.pid).cpu_affinity() == [cpu] and p.realtime["affinity"] == f"cpus [{cpu}]"
        yield p


def test_chunks_through_shared_memory(proc, linear_onnx, linear_obs):
    assert proc.metadata.horizon == 10 and proc.pid != os.getpid()
    stamp = time.monotonic_ns()
    rid = proc.request(linear_obs, tick=42, stamp_ns=stamp)
    chunk = proc.wait_chunk(rid, timeout=10.0)
    assert chunk is not None and chunk.ok
    assert (chunk.request_id, chunk.tick, chunk.request_ns) == (rid, 42, stamp)
    assert chunk.done_ns >= stamp and 0 < chunk.infer_ns <= chunk.done_ns - stamp
    expected = OnnxPolicy(linear_onnx).infer(linear_obs)["actions"]
    np.testing.assert_allclose(chunk.actions, expected, rtol=1e-6)
    assert proc.latest_chunk().request_id == rid


def test_context_is_merged_under_each_request(proc, linear_onnx, linear_obs):
    # The control process sends only state; images and the prompt come as context from the
    # main process. The request's own keys win over the context's.
    try:
        proc.set_context({"observation/image": linear_obs["observation/image"], "prompt": "x",
                          "observation/state": np.full(8, 9.0, np.float32)})
        rid = proc.request({"observation/state": linear_obs["observation/state"]}, tick=7)
        chunk = proc.wait_chunk(rid, timeout=10.0)
        assert chunk is not None and chunk.ok, proc.stats()
        expected = OnnxPolicy(linear_onnx).infer(linear_obs)["actions"]
        np.testing.assert_allclose(chunk.actions, expected, rtol=1e-6)
    finally:
        proc.set_context({})
    with pytest.raises(PolicyError, match="context must be a map"):
        proc.set_context([1, 2])  # type: ignore[arg-type]


def test_failed_inference_reported_and_process_keeps_serving(proc, linear_obs):
    bad = {**linear_obs, "observation/state": np.zeros(3, np.float32)}
    with pytest.raises(PolicyError, match=r"inference failed: PolicyError: .*shape \(3,\)"):
        proc.infer(bad, timeout=10.0)
    assert proc.latest_chunk().ok is False
    assert proc.infer(linear_obs, timeout=10.0)["actions"].shape == (10, 7)
    assert proc.check_alive() is None


def test_another_process_reads_the_chunks(proc, linear_obs):
    """What the control process does: attach to the chunk channel from its spec."""
    script = textwrap.dedent("""
        import json, sys
        from rtvla.policy.chunk_channel import ChunkReader, spec_from_wire
        r = ChunkReader(spec_from_wire(json.loads(sys.argv[1])), 10, 7)
        r.seq = r.channel.seq
        print("ready", flush=True)
        c = r.wait_newer(20.0)
        print(json.dumps({"rid": c.request_id, "tick": c.tick, "a": c.actions.tolist()}), flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script, json.dumps(spec_to_wire(proc.chunk_spec))],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        rid = proc.request(linear_obs, tick=7)
        got = json.loads(child.stdout.readline())
        assert child.wait(timeout=20) == 0
    finally:
        child.kill()
    mine = proc.wait_chunk(rid, 10.0)
    assert (got["rid"], got["tick"]) == (rid, 7)
    np.testing.assert_array_equal(np.array(got["a"]), mine.actions)


def test_bad_source_fails_start_with_the_reason(tmp_path):
    p = PolicyProcess(str(tmp_path / "missing.onnx"), start_timeout_s=60)
    with pytest.raises(PolicyError, match=r"failed to start: ConfigError: policy.source: ONNX file not found"):
        p.start()
    assert p.check_alive() is not None


def test_stop_is_bounded_while_the_child_waits_on_a_hung_server(linear_onnx, linear_obs):
    with ScriptedPolicyServer(OnnxPolicy(linear_onnx), default=Behaviour.slow(30.0)) as srv:
        p = PolicyProcess(srv.url, {"timeout_s": 60.0})
        p.start()
        p.request(linear_obs)
        # The child is now blocked inside the server's 30 s answer.
        assert p.wait_chunk(1, timeout=0.3) is None
        t0 = time.monotonic()
        p.stop(timeout=0.5)
        assert time.monotonic() - t0 < 5.0
        assert p.check_alive().startswith("policy process killed by signal") or "exit code" in p.check_alive()


def test_child_dies_with_its_parent(tmp_path, linear_onnx):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        from rtvla.policy import PolicyProcess
        if __name__ == "__main__":
            p = PolicyProcess({str(linear_onnx)!r})
            p.start()
            print(p.pid, flush=True)
            import threading
            threading.Event().wait()
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        child = psutil.Process(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        child.wait(timeout=10)  # raises TimeoutExpired if the child outlives its parent
    finally:
        parent.kill()
    assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE


def test_remote_policy_reconnects_after_its_server_drops(linear_onnx, linear_obs):
    with ScriptedPolicyServer(OnnxPolicy(linear_onnx)) as srv:
        srv.script(Behaviour.drop())
        with PolicyProcess(srv.url, {"timeout_s": 10.0}) as p:
            first = p.wait_chunk(p.request(linear_obs, tick=1), timeout=20.0)
            assert first is not None and not first.ok
            second = p.wait_chunk(p.request(linear_obs, tick=2), timeout=20.0)
            assert second is not None and second.ok and second.tick == 2
            stats = p.stats()
            assert stats["reconnects"] == 1 and stats["errors"] == 1
            assert "went away" in stats["last_error"] or "closed the connection" in stats["last_error"]
        assert srv.connections == 2
