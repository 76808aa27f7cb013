"""The openpi-protocol client against a real server on 127.0.0.1 (rtvla's PolicyServer)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from rtvla.errors import ConfigError, PolicyOutputError, PolicyServerError
from rtvla.policy import OnnxPolicy, PolicyServer, WebsocketPolicy, infer_chunk
from rtvla.testing.policy_server import Behaviour, ScriptedPolicyServer


@pytest.fixture
def onnx_policy(linear_onnx):
    return OnnxPolicy(linear_onnx)


@pytest.fixture
def server(onnx_policy):
    with ScriptedPolicyServer(onnx_policy) as srv:
        yield srv


def test_metadata_first_frame_and_one_inference(server, onnx_policy, linear_obs):
    with WebsocketPolicy(server.url) as client:
        meta = client.metadata
        assert (meta.action_dim, meta.horizon, meta.rate_hz) == (7, 10, 10.0)
        assert {s.text for s in meta.observation} == {"observation/state", "observation/image"}
        assert client.server_metadata["action_horizon"] == 10
        out = client.infer(linear_obs)
        local = onnx_policy.infer(linear_obs)["actions"]
        np.testing.assert_allclose(out["actions"], local, rtol=1e-6)
        # Keys beyond actions are kept for the report.
        assert out["server_timing"]["infer_ms"] >= 0 and "policy_timing" in out
        assert client.last_timing["round_trip_ms"] > 0
        out2 = client.infer(linear_obs)
        assert "prev_total_ms" in out2["server_timing"]  # openpi's field, from the second request
        assert client.round_trip_ms()["n"] == 2
    # The observation reached the server intact (prompt string and all).
    assert server.seen[0]["prompt"] == "pick up the red cube"
    np.testing.assert_array_equal(server.seen[0]["observation/image"], linear_obs["observation/image"])


def test_server_error_is_a_text_frame_raised_with_its_traceback(server, linear_obs):
    client = WebsocketPolicy(server.url)
    server.script(Behaviour.error("the model exploded"))
    with pytest.raises(PolicyServerError) as exc:
        client.infer(linear_obs)
    assert "the model exploded" in str(exc.value) and "Traceback" in str(exc.value)
    assert not client.connected and server.errors == 1
    with pytest.raises(PolicyServerError, match="not connected; call reconnect"):
        client.infer(linear_obs)
    client.reconnect()
    assert client.infer(linear_obs)["actions"].shape == (10, 7)
    client.close()


def test_close_1011_without_text_raised(server, linear_obs):
    """A server that closes with 1011 (internal error) before answering."""
    from websockets.frames import CloseCode

    class Closing(ScriptedPolicyServer):
        async def _answer(self, websocket, obs, index):
            await websocket.close(code=CloseCode.INTERNAL_ERROR, reason="out of GPU memory")
            return await super()._answer(websocket, obs, index)

    with Closing(server.policy) as srv, WebsocketPolicy(srv.url) as client, \
            pytest.raises(PolicyServerError, match=r"code 1011 \(internal server error\): out of GPU memory"):
        client.infer(linear_obs)


def test_slow_server_times_out_and_the_connection_is_dropped(server, linear_obs):
    client = WebsocketPolicy(server.url, timeout_s=0.3)
    server.script(Behaviour.slow(3.0))
    t0 = time.monotonic()
    with pytest.raises(PolicyServerError, match=r"no answer within 0.3 s"):
        client.infer(linear_obs)
    assert time.monotonic() - t0 < 2.5  # the timeout, plus a bounded close
    assert not client.connected
    client.reconnect()  # a fresh connection: the late answer cannot pair with this request
    out = client.infer(linear_obs)
    assert out["actions"].shape == (10, 7)
    client.close()


def test_dying_server_then_reconnect_with_backoff(onnx_policy, linear_obs):
    srv = ScriptedPolicyServer(onnx_policy).start()
    port = srv.port
    client = WebsocketPolicy(srv.url)
    srv.script(Behaviour.drop())
    with pytest.raises(PolicyServerError, match=r"went away|closed the connection"):
        client.infer(linear_obs)
    srv.stop()
    with pytest.raises(PolicyServerError, match="cannot connect"):
        client.reconnect(attempts=2, backoff_s=0.05)
    # The server comes back on the same port while the client is retrying.
    revived: list[PolicyServer] = []

    def revive() -> None:
        revived.append(ScriptedPolicyServer(onnx_policy, port=port).start())

    timer = threading.Timer(0.3, revive)
    timer.start()
    try:
        meta = client.reconnect(attempts=20, backoff_s=0.05, max_backoff_s=0.2)
        assert meta.horizon == 10 and client.connects == 2
        assert client.infer(linear_obs)["actions"].shape == (10, 7)
    finally:
        timer.join()
        client.close()
        for s in revived:
            s.stop()


def test_reconnect_wait_ends_when_stop_is_set():
    stop = threading.Event()
    client = WebsocketPolicy("ws://127.0.0.1:9", connect=False, connect_timeout_s=0.5)
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(PolicyServerError):
        client.reconnect(attempts=50, backoff_s=5.0, stop=stop)
    assert time.monotonic() - t0 < 4.0


@pytest.mark.parametrize("behaviour, match", [
    (Behaviour.bad_shape(), r"shape \(9, 7\); expected horizon 10"),
    (Behaviour.nan(), r"not finite: actions\[0, 0\] = nan"),
])
def test_wrong_actions_rejected(server, linear_obs, behaviour, match):
    with WebsocketPolicy(server.url) as client:
        server.script(behaviour)
        with pytest.raises(PolicyOutputError, match=match):
            infer_chunk(client, linear_obs)
        assert client.connected  # a bad answer is the policy's fault, not the transport's
        assert infer_chunk(client, linear_obs).actions.shape == (10, 7)


def test_api_key_accepted_and_refused(onnx_policy, linear_obs, monkeypatch):
    monkeypatch.setenv("RTVLA_TEST_POLICY_KEY", "s3cret")
    monkeypatch.setenv("RTVLA_TEST_WRONG_KEY", "guess")
    with PolicyServer(onnx_policy, api_key="s3cret") as srv:
        with WebsocketPolicy(srv.url, api_key_env="RTVLA_TEST_POLICY_KEY") as client:
            assert client.infer(linear_obs)["actions"].shape == (10, 7)
        with pytest.raises(PolicyServerError, match=r"HTTP 401 .API key missing or refused"):
            WebsocketPolicy(srv.url, api_key_env="RTVLA_TEST_WRONG_KEY")
        with pytest.raises(PolicyServerError, match="HTTP 401"):
            WebsocketPolicy(srv.url)
        assert srv.refused == 2 and srv.requests == 1
        # Health checks need no key.
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=5) as r:
            assert r.status == 200 and r.read() == b"OK\n"
    with pytest.raises(ConfigError, match="RTVLA_TEST_UNSET_KEY"):
        WebsocketPolicy("ws://127.0.0.1:9", api_key_env="RTVLA_TEST_UNSET_KEY")


def test_healthz_and_plain_http(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
        assert r.status == 200 and r.read() == b"OK\n"
    with pytest.raises(urllib.error.HTTPError):  # not a websocket upgrade
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)


def test_delay_adds_server_side_latency(onnx_policy, linear_obs):
    with PolicyServer(onnx_policy, delay_s=0.15) as srv, WebsocketPolicy(srv.url) as client:
        out = client.infer(linear_obs)
        assert out["server_timing"]["delay_ms"] == pytest.approx(150.0)
        assert client.last_timing["round_trip_ms"] >= 150.0


def test_unreachable_and_bad_urls():
    with pytest.raises(PolicyServerError, match=r"cannot connect to policy server ws://127.0.0.1:9"):
        WebsocketPolicy("ws://127.0.0.1:9", connect_timeout_s=1.0)
    with pytest.raises(ConfigError, match="ws:// or wss://"):
        WebsocketPolicy("http://127.0.0.1:9")


def test_server_binds_loopback_by_default(onnx_policy):
    with PolicyServer(onnx_policy) as srv:
        assert srv.url.startswith("ws://127.0.0.1:")
        assert all(s.getsockname()[0] == "127.0.0.1" for s in srv._server.sockets)


def test_real_time_chunking_fields_only_to_servers_that_advertise_it(tmp_path, linear_obs):
    import json as _json

    from rtvla.policy import RTC_DELAY_KEY, RTC_LEFTOVER_KEY, with_real_time_chunking
    from rtvla.testing.policy_server import build_linear_policy

    plain = build_linear_policy(tmp_path / "plain.onnx", image=(64, 64))
    rtc = build_linear_policy(tmp_path / "rtc.onnx", image=(64, 64),
                              metadata={"rtvla.capabilities": _json.dumps(["real_time_chunking"])})
    leftover = np.ones((4, 7), np.float32)
    for path, expect in ((plain, False), (rtc, True)):
        with ScriptedPolicyServer(OnnxPolicy(path)) as srv, WebsocketPolicy(srv.url) as client:
            assert client.metadata.real_time_chunking is expect
            client.infer(with_real_time_chunking(linear_obs, client.metadata, leftover, 3))
            seen = srv.seen[0]
        assert (RTC_LEFTOVER_KEY in seen) is expect and (RTC_DELAY_KEY in seen) is expect
        if expect:
            np.testing.assert_array_equal(seen[RTC_LEFTOVER_KEY], leftover)
            assert seen[RTC_DELAY_KEY] == 3


def _openpi_pack(obj):
    """openpi_client.msgpack_numpy's encoding, spelled out with plain msgpack."""
    import msgpack

    def default(o):
        if isinstance(o, np.ndarray):
            return {b"__ndarray__": True, b"data": o.tobytes(), b"dtype": o.dtype.str, b"shape": o.shape}
        raise TypeError(type(o))

    return msgpack.packb(obj, default=default)


def test_openpi_style_raw_client_interoperates(server, linear_obs):
    import msgpack
    from websockets.sync.client import connect

    with connect(server.url, compression=None, max_size=None) as ws:
        meta = msgpack.unpackb(ws.recv(timeout=5))
        assert meta["action_horizon"] == 10
        ws.send(_openpi_pack(linear_obs))
        raw = msgpack.unpackb(ws.recv(timeout=5))
        a = raw["actions"]
        assert a[b"__ndarray__"] is True and a[b"dtype"] == "<f4" and a[b"shape"] == [10, 7]
        actions = np.frombuffer(a[b"data"], dtype=a[b"dtype"]).reshape(a[b"shape"])
        assert np.isfinite(actions).all() and "infer_ms" in raw["server_timing"]
        # A text frame is not a request: the server answers with its error as text, then 1011.
        ws.send("hello")
        err = ws.recv(timeout=5)
        assert isinstance(err, str) and "requests are binary msgpack frames" in err
        from websockets.exceptions import ConnectionClosed

        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1011


def test_malformed_server_metadata_refused(onnx_policy):
    with PolicyServer(onnx_policy, metadata={"action_dim": -1}) as srv, \
            pytest.raises(PolicyServerError, match="policy metadata is malformed"):
        WebsocketPolicy(srv.url)
    with PolicyServer(onnx_policy, metadata={"action_dim": 9}) as srv, \
            WebsocketPolicy(srv.url, action_dim=7) as client:
        assert client.metadata.action_dim == 7  # options beat the server's metadata
