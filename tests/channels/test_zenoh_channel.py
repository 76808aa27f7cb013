"""ZenohChannel: two peers on 127.0.0.1, configured endpoints only."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("zenoh")

from rtvla.channels.base import Channel
from rtvla.channels.zenoh_channel import ZenohChannel, _decode, _encode
from rtvla.errors import ChannelClosed, ChannelError
from rtvla.timing import FakeClock


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pair(key: str, **kwargs) -> tuple[ZenohChannel, ZenohChannel]:
    for _ in range(5):  # the port may be taken between probing and listening
        port = _free_port()
        try:
            a = ZenohChannel(key, listen=[f"tcp/127.0.0.1:{port}"], **kwargs)
        except ChannelError:
            continue
        b = ZenohChannel(key, connect=[f"tcp/127.0.0.1:{port}"])
        return a, b
    raise RuntimeError("no free port for a zenoh peer")


@pytest.fixture
def peers() -> Iterator[tuple[ZenohChannel, ZenohChannel]]:
    a, b = _pair("rtvla/test/peers", clock=FakeClock(5_000))
    try:
        assert a.wait_matched(20.0), "peers did not connect"
        assert b.wait_matched(20.0)
        yield a, b
    finally:
        a.close()
        b.close()


def test_array_crosses_between_peers_with_publisher_stamp(peers) -> None:
    a, b = peers
    assert isinstance(a, Channel)
    frame = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert a.publish(frame) == 1
    assert a.latest().seq == 1  # the publisher holds its own value too
    s = b.wait_newer(0, timeout=20.0)
    assert s is not None and s.seq == 1
    assert s.stamp_ns == 5_000  # the publisher's clock
    assert s.value.dtype == np.float32 and s.value.shape == (2, 3, 4)
    np.testing.assert_array_equal(s.value, frame)
    assert b.received == 1 and b.missed == 0


def test_bytes_and_json_and_both_directions(peers) -> None:
    a, b = peers
    a.publish(b"\x00\x01raw")
    assert b.wait_newer(0, timeout=20.0).value == b"\x00\x01raw"
    seen = a.seq  # read before b publishes: the answer may arrive before wait_newer runs
    b.publish({"objects": [{"label": "red_cube", "xyz": [0.1, 0.2, 0.0]}]})
    s = a.wait_newer(seen, timeout=20.0)
    assert s.value == {"objects": [{"label": "red_cube", "xyz": [0.1, 0.2, 0.0]}]}


def test_reader_ends_on_newest_and_never_goes_back(peers) -> None:
    a, b = peers
    for i in range(1, 201):
        a.publish(np.full(16, i, np.int64))
    publishes = 200
    last_value, seq = 0, 0
    while last_value < 200:
        s = b.wait_newer(seq, timeout=2.0)
        if s is None:
            # Congestion control DROP may drop the newest too (a busy host): a publisher at a
            # rate sends again, and the reader then gets the newest.
            assert publishes < 210, f"stalled at value {last_value}"
            a.publish(np.full(16, 200, np.int64))
            publishes += 1
            continue
        v = int(s.value[0])
        assert v > last_value  # newer only, never a stale one
        last_value, seq = v, s.seq
    assert b.received + b.missed == publishes


def test_unconfigured_peer_is_not_discovered(peers) -> None:
    a, _b = peers
    # A third peer with no endpoints: multicast and gossip scouting are off by default,
    # so it never reaches the others however long it waits.
    with ZenohChannel("rtvla/test/peers") as lonely:
        a.publish(np.zeros(4))
        assert lonely.wait_newer(0, timeout=0.5) is None
        assert not lonely.wait_matched(0.0)


def test_close_wakes_waiter_and_rejects_publish() -> None:
    ch = ZenohChannel("rtvla/test/close")
    got: list = []
    t = threading.Thread(target=lambda: got.append(ch.wait_newer(0, timeout=30.0)))
    t.start()
    ch.close()
    t.join(10.0)
    assert not t.is_alive() and got == [None]
    ch.close()
    with pytest.raises(ChannelClosed):
        ch.publish(b"x")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"key": "rtvla/*"}, "plain key expression"),
        ({"key": ""}, "plain key expression"),
        ({"key": "k", "listen": ["127.0.0.1:7447"]}, "must look like 'tcp/127.0.0.1:7447'"),
        ({"key": "k", "connect": "tcp/127.0.0.1:7447"}, "must be a list of endpoints"),
        ({"key": "k", "mode": "router"}, "mode must be one of"),
    ],
)
def test_bad_configuration_is_channel_error(kwargs, match: str) -> None:
    with pytest.raises(ChannelError, match=match):
        ZenohChannel(**kwargs)


def test_unsendable_values_and_foreign_payloads() -> None:
    with ZenohChannel("rtvla/test/types") as ch:
        with pytest.raises(ChannelError, match="cannot send object"):
            ch.publish(object())
        with pytest.raises(ChannelError, match="holds Python objects"):
            ch.publish(np.array([object()]))
    with pytest.raises(ValueError, match="magic"):
        _decode(b"XXXX" + bytes(40))
    value, seq, stamp = _decode(_encode(np.eye(2, dtype=">f8"), 7, 9))
    assert (seq, stamp) == (7, 9) and value.dtype == np.dtype(">f8")


def test_dicts_holding_arrays_cross_as_raw_bytes(peers) -> None:
    a, b = peers
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    frame = {"image": image, "depth": np.ones((4, 4), np.float32), "stamp_ns": np.int64(7),
             "meta": [{"pose": np.eye(4)}, "head", None]}
    a.publish(frame)
    s = b.wait_newer(0, timeout=20.0)
    assert s is not None
    v = s.value
    np.testing.assert_array_equal(v["image"], image)
    assert v["depth"].dtype == np.float32 and v["stamp_ns"] == 7 and isinstance(v["stamp_ns"], int)
    np.testing.assert_array_equal(v["meta"][0]["pose"], np.eye(4))
    assert v["meta"][1:] == ["head", None]
    assert not v["image"].flags.writeable  # a view of the payload, never copied


def test_tree_payloads_and_their_limits() -> None:
    value, seq, stamp = _decode(_encode({"a": [np.zeros(3, ">i2"), 1.5]}, 2, 3))
    assert (seq, stamp) == (2, 3) and value["a"][0].dtype == np.dtype(">i2") and value["a"][1] == 1.5
    plain, _, _ = _decode(_encode({"n": np.float32(2.5)}, 1, 1))  # numpy scalars, no arrays: JSON
    assert plain == {"n": 2.5}
    with pytest.raises(ChannelError, match="reserved key"):
        _encode({"__nd__": 1}, 1, 1)
    with pytest.raises(ChannelError, match="holds Python objects"):
        _encode({"x": np.array([object()])}, 1, 1)
    data = _encode({"x": np.zeros(100)}, 1, 1)
    with pytest.raises(ValueError, match="cut short"):
        _decode(data[:-100])


def test_tls_options_are_checked() -> None:
    from rtvla.channels.zenoh_channel import zenoh_config

    zenoh_config(listen=["tls/127.0.0.1:7448"], tls={"root_ca_certificate": "ca.pem", "enable_mtls": True})
    with pytest.raises(ChannelError, match="unknown option"):
        zenoh_config(tls={"certificate": "x"})


def _certificates(d) -> dict[str, str]:
    """A throw-away CA and a server certificate for localhost/127.0.0.1 (openssl)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=rtvla-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    return {k: str(d / f) for k, f in (("ca", "ca.pem"), ("cert", "srv.pem"), ("key", "srv.key"))}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make certificates")
def test_tls_endpoints_carry_data_and_refuse_an_untrusted_server(tmp_path) -> None:
    pem = _certificates(tmp_path)
    port = _free_port()
    server_tls = {"listen_certificate": pem["cert"], "listen_private_key": pem["key"]}
    with ZenohChannel("rtvla/test/tls", listen=[f"tls/localhost:{port}"], tls=server_tls) as a, \
            ZenohChannel("rtvla/test/tls", connect=[f"tls/localhost:{port}"],
                         tls={"root_ca_certificate": pem["ca"]}) as b:
        assert a.wait_matched(20.0)
        a.publish(np.arange(5))
        s = b.wait_newer(0, timeout=20.0)
        assert s is not None and list(s.value) == [0, 1, 2, 3, 4]
        # A client that trusts another CA never gets through to this server.
        other = tmp_path / "other"
        other.mkdir()
        with ZenohChannel("rtvla/test/tls", connect=[f"tls/localhost:{port}"],
                          tls={"root_ca_certificate": _certificates(other)["ca"]}) as c:
            a.publish(np.arange(2))
            assert c.wait_newer(0, timeout=1.0) is None
