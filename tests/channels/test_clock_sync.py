"""ClockSync: NTP-style offset estimation between two processes on 127.0.0.1 over Zenoh.

Two processes on one host read the same CLOCK_MONOTONIC, so the true offset is 0: the
estimate must lie within its own uncertainty of 0. With a known offset injected into the
answering side's clock, the estimate must recover it within the uncertainty.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytest.importorskip("zenoh")

import zenoh

from rtvla.channels.clock_sync import ClockOffset, ClockSync, ClockSyncServer, clock_key
from rtvla.channels.zenoh_channel import zenoh_config
from rtvla.errors import ChannelError
from rtvla.timing import MONOTONIC

KEY = clock_key("testbot", "remote-host")

_SERVER = """
import sys
import zenoh
from rtvla.channels.clock_sync import ClockSyncServer
from rtvla.channels.zenoh_channel import zenoh_config
from rtvla.timing import MONOTONIC

port, key, offset = sys.argv[1], sys.argv[2], int(sys.argv[3])
session = zenoh.open(zenoh_config(connect=[f"tcp/127.0.0.1:{port}"]))
server = ClockSyncServer(session, key, clock_ns=lambda: MONOTONIC.now_ns() + offset)
print("ready", flush=True)
sys.stdin.read()  # serve until the parent closes our stdin
server.close()
session.close()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listening() -> Iterator[tuple[object, int]]:
    for _ in range(5):
        port = _free_port()
        try:
            session = zenoh.open(zenoh_config(listen=[f"tcp/127.0.0.1:{port}"]))
            break
        except Exception:
            continue
    else:
        raise RuntimeError("no free port")
    try:
        yield session, port
    finally:
        session.close()


def _estimate_against_child(session: object, port: int, offset_ns: int) -> ClockOffset:
    child = subprocess.Popen([sys.executable, "-c", _SERVER, str(port), KEY, str(offset_ns)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        sync = ClockSync(session, KEY, timeout_s=1.0)
        assert sync.wait_ready(60.0), "the clock server in the child process never answered"
        return sync.estimate(n=20)
    finally:
        child.stdin.close()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)


def test_two_processes_on_one_host_have_zero_offset_within_uncertainty(listening, tmp_path) -> None:
    session, port = listening
    off = _estimate_against_child(session, port, 0)
    assert off.samples == 20
    assert off.uncertainty_ns == (off.rtt_ns + 1) // 2
    assert abs(off.offset_ns) <= off.uncertainty_ns, off
    assert off.rtt_ns < 200_000_000  # loopback: well under 200 ms even on a busy 2-core box
    (tmp_path / "loopback_offset.json").write_text(json.dumps(off.to_dict()))
    print(f"loopback clock offset error {off.offset_ns / 1e3:+.1f} us, uncertainty "
          f"{off.uncertainty_ns / 1e3:.1f} us, best RTT {off.rtt_ns / 1e3:.1f} us")


def test_an_injected_offset_is_recovered_within_uncertainty(listening) -> None:
    session, port = listening
    truth = -3_600_000_000_123  # the remote clock is an hour (and a bit) behind
    off = _estimate_against_child(session, port, truth)
    assert abs(off.offset_ns - truth) <= off.uncertainty_ns, off
    remote_now = MONOTONIC.now_ns() + truth
    assert abs(off.to_local(remote_now) - MONOTONIC.now_ns()) <= off.uncertainty_ns + 50_000_000
    assert off.to_remote(off.to_local(123)) == 123


def test_in_process_server_and_bad_input(listening) -> None:
    session, _ = listening
    with ClockSyncServer(session, KEY, clock_ns=lambda: MONOTONIC.now_ns() + 42_000) as server:
        off = ClockSync(session, KEY).estimate(n=5)
        assert abs(off.offset_ns - 42_000) <= off.uncertainty_ns
        assert server.answered == 5
        # A ping that is not ours is ignored, not answered.
        replies = list(session.get(KEY, payload=b"junk", timeout=1.0))
        assert all(r.ok is None for r in replies) and server.malformed == 1
    with pytest.raises(ChannelError, match="none of 2 pings"):
        ClockSync(session, clock_key("testbot", "nobody"), timeout_s=0.2).estimate(n=2)
    with pytest.raises(ChannelError, match="n >= 1"):
        ClockSync(session, KEY).estimate(n=0)
    with pytest.raises(ChannelError, match="host name"):
        clock_key("testbot", "a/b")
    with pytest.raises(ChannelError, match="timeout_s"):
        ClockSync(session, KEY, timeout_s=0)
