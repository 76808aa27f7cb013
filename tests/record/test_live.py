"""The live view: the Foxglove WebSocket server started by RunRecord, spoken to as Foxglove does."""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

from websockets.sync.client import connect

from rtvla.record import RecordSettings, RunRecord

# foxglove-sdk 0.30 speaks the Foxglove WebSocket protocol under the subprotocol name
# "foxglove.sdk.v1" (it refuses the older "foxglove.websocket.v1"); the Foxglove app offers both.
_SUBPROTOCOL = "foxglove.sdk.v1"
_MESSAGE_DATA = 0x01


def test_live_view_advertises_channels_and_streams_messages(tmp_path: Path) -> None:
    record = RunRecord(tmp_path / "run.mcap", settings=RecordSettings(live=True, live_port=0))
    stop = threading.Event()

    def produce() -> None:  # the stack keeps logging while a viewer connects
        i = 0
        while not stop.wait(0.01):
            record.log_control(0.00005, tick=i)
            i += 1

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        port = record.live_port
        assert port
        with connect(f"ws://127.0.0.1:{port}", subprotocols=[_SUBPROTOCOL], open_timeout=10) as ws:
            assert ws.subprotocol == _SUBPROTOCOL
            channel = None
            deadline = time.monotonic() + 20
            while channel is None and time.monotonic() < deadline:
                msg = ws.recv(timeout=10)
                if isinstance(msg, str):
                    data = json.loads(msg)
                    if data.get("op") == "advertise":
                        channel = next((c for c in data["channels"] if c["topic"] == "/control/timing"), None)
            assert channel is not None, "no advertisement of /control/timing"
            assert channel["encoding"] == "json" and channel["schemaName"] == "rtvla.ControlTiming"
            ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": 7, "channelId": channel["id"]}]}))
            payload = None
            while payload is None and time.monotonic() < deadline:
                msg = ws.recv(timeout=10)
                if isinstance(msg, bytes) and msg[0] == _MESSAGE_DATA:
                    sub_id, log_time = struct.unpack_from("<IQ", msg, 1)
                    assert sub_id == 7 and log_time > 0
                    payload = json.loads(msg[13:])
            assert payload is not None and "lateness_us" in payload
    finally:
        stop.set()
        producer.join(5)
        stats = record.close()
    assert stats["counts"]["/control/timing"] > 0


def test_live_view_binds_loopback(tmp_path: Path) -> None:
    with RunRecord(tmp_path / "run.mcap", live=True, live_port=0) as record:
        assert record.settings.live_host == "127.0.0.1" and record.live_port
