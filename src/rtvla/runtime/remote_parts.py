"""Remote parts: parts of a stack that run in ``rtvla node`` processes, here or on other hosts.

The ``[remote]`` table configures the Zenoh session (the same table configures a node) and,
in ``[remote.<part>]`` subtables, which parts of this stack run elsewhere::

    [remote]
    robot = "sim"                      # keys rtvla/<robot>/...; default: the robot plug-in's name
    mode = "peer"                      # or "client" (through a zenoh router)
    listen = []                        # endpoints this side accepts on (a node: its own)
    connect = []                       # endpoints to connect besides the parts' own
    multicast_scouting = false         # off: only configured endpoints are ever reached
    # [remote.tls] root_ca_certificate = "ca.pem" ... (with tls/HOST:PORT endpoints)

    [remote.perception]                # the head camera's perception runs on another host
    endpoint = "tcp/10.0.0.5:7447"
    critical = true
    lost_timeout_s = 15.0

Keys (``rtvla/<robot>/...``): ``telemetry`` (this stack's robot state, so that a node's
cameras follow the robot), ``camera/<name>`` (frames), ``detections``, ``metrics/<part>``
(the node's figures, 1 Hz), ``alive/<part>/<host>`` (its liveliness token), ``clock/<part>`` (its
clock-sync server). Stamps from a node are on its own monotonic clock: they are turned into
this host's by the offset measured with :class:`~rtvla.channels.clock_sync.ClockSync`
(min-RTT filter), never by comparing wall clocks.

Presence is the liveliness token. A part whose token disappears (the process died, the host
is unreachable) is *lost*: a ``degraded`` event, its data is marked stale (the world model
stops using it; a perceive step waits), with ``stop_robot = true`` the robot is stopped at
once (a latched stop, as after a control fault), and a critical part not back within
``lost_timeout_s`` is a critical failure (the robot is stopped and the run ends), as when a
local critical part exhausts its restarts. Restarting it is the remote host's business; when
its token comes back the clock is measured again and its data is used again (``recovered``).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rtvla.channels import LatestValue, ZenohChannel, zenoh_config
from rtvla.channels.clock_sync import ClockOffset, ClockSync, clock_key
from rtvla.channels.zenoh_channel import TLS_KEYS, check_endpoints
from rtvla.config import format_validation_error
from rtvla.errors import ChannelError, ConfigError
from rtvla.metrics import Recorder
from rtvla.perception.detections import Detection, Detections
from rtvla.perception.frames import Frame, Intrinsics
from rtvla.timing import MONOTONIC, Clock, Periodic

__all__ = ["REMOTE_PARTS", "RemoteCameraSource", "RemoteKeys", "RemoteLink", "RemotePartSettings",
           "RemotePerception", "RemoteSettings", "decode_detections", "encode_detections"]

logger = logging.getLogger(__name__)

#: Parts that ``rtvla node`` runs and a stack can use remotely.
REMOTE_PARTS = ("camera", "perception")
_POSES_KEPT = 256  # frames whose camera pose is remembered (the world model asks by frame)


class RemotePartSettings(BaseModel):
    """One ``[remote.<part>]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: list[str] = Field(default_factory=list, description="where the node listens")
    critical: bool = True
    lost_timeout_s: float = Field(15.0, gt=0, description="a critical part lost longer fails the run")
    stop_robot: bool = Field(False, description="a loss stops the robot at once (latched, as a "
                             "control fault does): for a part without which moving is unsafe")
    camera: str | None = Field(None, description="camera part: the node's camera (default: the first)")

    @field_validator("endpoint", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RemoteSettings(BaseModel):
    """The ``[remote]`` table: the Zenoh session and the parts that run elsewhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    robot: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = Field(default_factory=lambda: socket.gethostname() or "localhost", pattern=r"^[A-Za-z0-9_.-]+$")
    mode: str = Field("peer", pattern="^(peer|client)$")
    listen: list[str] = Field(default_factory=list)
    connect: list[str] = Field(default_factory=list)
    multicast_scouting: bool = False
    gossip_scouting: bool = False
    tls: dict[str, Any] = Field(default_factory=dict)
    clock_pings: int = Field(10, ge=1, le=1000)
    clock_sync_interval_s: float = Field(10.0, gt=0)
    telemetry_hz: float = Field(60.0, gt=0, le=1000)
    metrics_interval_s: float = Field(1.0, gt=0, le=60)
    parts: dict[str, RemotePartSettings] = Field(default_factory=dict)

    @field_validator("tls")
    @classmethod
    def _tls_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(value) - set(TLS_KEYS))
        if bad:
            raise ValueError(f"unknown tls option(s) {bad}; known: {', '.join(TLS_KEYS)}")
        return value

    @classmethod
    def from_section(cls, table: dict[str, Any]) -> RemoteSettings:
        """Validate ``[remote]``; subtables other than ``tls`` are parts."""
        data = dict(table)
        parts: dict[str, Any] = {}
        for key in list(data):
            if isinstance(data[key], dict) and key != "tls":
                if key not in REMOTE_PARTS:
                    raise ConfigError(f"remote.{key}: unknown remote part {key!r}; remote parts: "
                                      f"{', '.join(REMOTE_PARTS)}")
                parts[key] = data.pop(key)
        data["parts"] = parts
        try:
            out = cls.model_validate(data)
            check_endpoints("remote.listen", out.listen)
            check_endpoints("remote.connect", out.connect)
            for name, part in out.parts.items():
                check_endpoints(f"remote.{name}.endpoint", part.endpoint)
        except ValidationError as exc:
            raise ConfigError(format_validation_error("remote", exc)) from None
        except ChannelError as exc:
            raise ConfigError(f"remote: {exc}") from None
        if out.parts and not out.reachable(extra=[e for p in out.parts.values() for e in p.endpoint]):
            raise ConfigError(f"remote.{next(iter(out.parts))}.endpoint: give the node's endpoint (or "
                              "[remote] listen/connect); without one nothing can reach it")
        if {"camera", "perception"} <= set(out.parts):
            raise ConfigError("remote: camera and perception cannot both be remote (a perception "
                              "node carries its own camera); configure one of them")
        return out

    def reachable(self, extra: list[str] | None = None) -> bool:
        """Whether this side has any way to meet a peer: endpoints or multicast scouting."""
        return bool(self.listen or self.connect or extra or self.multicast_scouting)

    def session_config(self, *, extra_connect: list[str] | None = None) -> Any:
        connect = list(dict.fromkeys([*self.connect, *(extra_connect or [])]))
        return zenoh_config(mode=self.mode, listen=self.listen, connect=connect,
                            multicast_scouting=self.multicast_scouting,
                            gossip_scouting=self.gossip_scouting, tls=self.tls or None)


@dataclass(frozen=True)
class RemoteKeys:
    """The key expressions of one robot's remote parts."""

    robot: str

    @property
    def telemetry(self) -> str:
        return f"rtvla/{self.robot}/telemetry"

    @property
    def detections(self) -> str:
        return f"rtvla/{self.robot}/detections"

    def camera(self, name: str) -> str:
        return f"rtvla/{self.robot}/camera/{name}"

    def metrics(self, part: str) -> str:
        return f"rtvla/{self.robot}/metrics/{part}"

    def alive(self, part: str, host: str) -> str:
        return f"rtvla/{self.robot}/alive/{part}/{host}"

    @property
    def alive_all(self) -> str:
        return f"rtvla/{self.robot}/alive/**"

    def clock(self, part: str) -> str:
        return clock_key(self.robot, part)


# -- payloads -------------------------------------------------------------------------------

def encode_detections(dets: Detections, pose: np.ndarray | None, camera: str) -> dict[str, Any]:
    """One pipeline result as a Zenoh payload, with the camera pose of its frame."""
    return {
        "items": [{"box": list(d.box), "label": d.label, "score": float(d.score), "class_id": int(d.class_id),
                   "position": None if d.position is None else [float(v) for v in d.position]}
                  for d in dets.items],
        "frame_seq": int(dets.frame_seq), "frame_stamp_ns": int(dets.frame_stamp_ns),
        "processing_s": float(dets.processing_s), "frame_size": list(dets.frame_size),
        "resolution": list(dets.resolution), "detector": dets.detector, "stale": bool(dets.stale),
        "camera": camera, "pose": None if pose is None else np.asarray(pose, dtype=np.float64),
    }


def decode_detections(value: dict[str, Any], to_local: Callable[[int], int], *,
                      frame_seq: int | None = None) -> tuple[Detections, np.ndarray | None]:
    """A payload of :func:`encode_detections` with its frame stamp on this host's clock."""
    items = tuple(Detection(tuple(float(v) for v in it["box"]), str(it["label"]), float(it["score"]),
                            int(it.get("class_id", 0)),
                            None if it.get("position") is None else tuple(float(v) for v in it["position"]))
                  for it in value["items"])
    dets = Detections(items, int(value["frame_seq"] if frame_seq is None else frame_seq),
                      to_local(int(value["frame_stamp_ns"])), float(value["processing_s"]),
                      tuple(value["frame_size"]), tuple(value["resolution"]), str(value["detector"]),
                      stale=bool(value["stale"]))
    pose = value.get("pose")
    return dets, None if pose is None else np.array(pose, dtype=float).reshape(4, 4)


# -- the link: session, presence, clocks, figures ---------------------------------------------

@dataclass
class _PartState:
    name: str
    settings: RemotePartSettings
    token: bool = False  # its liveliness token is present
    alive: bool = False  # token present and clock measured: its data is used
    seen: bool = False
    host: str | None = None
    pid: int | None = None
    offset: ClockOffset | None = None
    syncs: int = 0
    sync_due_ns: int = 0
    lost_since_ns: int | None = None
    lost: int = 0
    recovered: int = 0
    failed: bool = False
    metrics: dict[str, Any] | None = None
    metrics_seq: int = 0


class RemoteLink:
    """This stack's side of its remote parts: one Zenoh session, liveliness, clock offsets,
    the nodes' figures, and the robot's telemetry for the nodes' cameras.

    A node's process CPU and memory go into the part's row of this recorder (a remote
    perception node is checked against perception's budget).
    ``on_critical_failure(name, message)`` is called when a critical part stays lost;
    ``on_change(name, status, message)`` when a part is ``lost`` (from a Zenoh thread) and
    ``running`` again.
    """

    def __init__(self, settings: RemoteSettings, recorder: Recorder, *, robot: str,
                 telemetry: Callable[[], np.ndarray | None] | None = None,
                 on_critical_failure: Callable[[str, str], Any] | None = None,
                 on_change: Callable[[str, str, str], Any] | None = None,
                 clock: Clock = MONOTONIC) -> None:
        self.settings = settings
        self.recorder = recorder
        self.keys = RemoteKeys(settings.robot or robot)
        self.telemetry = telemetry
        self.on_critical_failure = on_critical_failure
        self.on_change = on_change
        self.clock = clock
        self.parts = {n: _PartState(n, s) for n, s in settings.parts.items()}
        self.session: Any = None
        self._channels: dict[str, ZenohChannel] = {}
        self._metrics: dict[str, ZenohChannel] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._liveliness: Any = None
        self._telemetry_pub: Periodic | None = None
        self._telemetry_ch: ZenohChannel | None = None

    def start(self) -> None:
        """Open the session (connecting to every part's endpoint) and start watching."""
        import zenoh

        endpoints = [e for p in self.settings.parts.values() for e in p.endpoint]
        try:
            self.session = zenoh.open(self.settings.session_config(extra_connect=endpoints))
        except Exception as exc:
            raise ChannelError(f"remote: cannot open the zenoh session (connect={endpoints}): {exc}") from exc
        for name in self.parts:
            self._metrics[name] = ZenohChannel(self.keys.metrics(name), session=self.session)
        self._liveliness = self.session.liveliness().declare_subscriber(
            self.keys.alive_all, self._on_token, history=True)
        if self.telemetry is not None:
            self._telemetry_ch = ZenohChannel(self.keys.telemetry, session=self.session)
            self._telemetry_pub = Periodic(1.0 / self.settings.telemetry_hz, self._publish_telemetry,
                                           name="rtvla-remote-telemetry").start()
        self._thread = threading.Thread(target=self._maintain, name="rtvla-remote", daemon=True)
        self._thread.start()

    def channel(self, key: str) -> ZenohChannel:
        """A channel on this link's session (one per key)."""
        if self.session is None:
            raise ChannelError("remote link not started")
        with self._lock:
            ch = self._channels.get(key)
            if ch is None:
                ch = self._channels[key] = ZenohChannel(key, session=self.session, clock=self.clock)
            return ch

    def alive(self, part: str) -> bool:
        return self.parts[part].alive

    def offset(self, part: str) -> ClockOffset | None:
        """The part's clock offset while it is alive and measured, else None."""
        st = self.parts[part]
        return st.offset if st.alive else None

    def host(self, part: str) -> str:
        return self.parts[part].host or "?"

    # -- zenoh callbacks and the helper thread ----------------------------------------------

    def _on_token(self, sample: Any) -> None:
        name, _, host = str(sample.key_expr).split("/alive/", 1)[-1].partition("/")
        st = self.parts.get(name)
        if st is None:
            return  # a part this stack does not use remotely
        put = str(sample.kind).endswith("PUT")
        message = None
        with self._lock:
            st.token = put
            if put:
                st.host = host or st.host
                st.alive = False  # usable once its clock is measured again
                st.offset = None
                st.sync_due_ns = 0
            elif st.seen and st.lost_since_ns is None:
                st.alive = False
                st.offset = None
                st.lost_since_ns = self.clock.now_ns()
                st.lost += 1
                message = (f"remote {name} on {st.host or '?'} is gone (its liveliness token "
                           "disappeared); its data is stale")
                self.recorder.event(name, "degraded", message, remote=True, host=st.host,
                                    critical=st.settings.critical)
                logger.warning("remote part %s on %s lost", name, st.host)
        if message is not None:
            self._changed(name, "lost", message)
        self._wake.set()

    def _changed(self, name: str, status: str, message: str) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(name, status, message)
        except Exception:  # often a zenoh thread: report, never raise into it
            logger.exception("remote part %s: on_change failed", name)

    def _maintain(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            if self._stop.is_set():
                return
            for st in self.parts.values():
                try:
                    self._tend(st)
                except Exception:  # the helper thread must go on for the other parts
                    logger.exception("remote part %s: maintenance failed", st.name)

    def _tend(self, st: _PartState) -> None:
        now = self.clock.now_ns()
        self._read_metrics(st)
        if st.lost_since_ns is not None and not st.failed and st.settings.critical \
                and now - st.lost_since_ns > st.settings.lost_timeout_s * 1e9:
            st.failed = True
            msg = (f"remote critical part {st.name} on {st.host or '?'} lost for more than "
                   f"{st.settings.lost_timeout_s:g} s")
            self.recorder.event(st.name, "failed", msg, remote=True, host=st.host)
            if self.on_critical_failure is not None:
                self.on_critical_failure(st.name, msg)
        if not st.token or now < st.sync_due_ns:
            return
        try:
            off = ClockSync(self.session, self.keys.clock(st.name), clock=self.clock,
                            timeout_s=0.5).estimate(self.settings.clock_pings)
        except ChannelError as exc:
            logger.info("remote part %s: clock not measured yet: %s", st.name, exc)
            st.sync_due_ns = now + int(0.5e9)
            return
        with self._lock:
            first = st.offset is None
            st.offset = off if st.offset is None or off.uncertainty_ns <= 2 * st.offset.uncertainty_ns \
                or not st.alive else st.offset
            st.syncs += 1
            st.sync_due_ns = now + int(self.settings.clock_sync_interval_s * 1e9)
            if st.alive:
                return
            st.alive = True
            back = st.lost_since_ns is not None
            if back:
                gone_s = (now - st.lost_since_ns) / 1e9
                st.lost_since_ns = None
                st.recovered += 1
        detail = {"remote": True, "host": st.host, **off.to_dict()}
        self._changed(st.name, "running", f"remote {st.name} on {st.host or '?'} is present")
        if back:
            self.recorder.event(st.name, "recovered", f"remote {st.name} on {st.host or '?'} is back after "
                                f"{gone_s:.1f} s; its data is used again", gone_s=round(gone_s, 3), **detail)
        elif first and not st.seen:
            self.recorder.event(st.name, "remote", f"remote {st.name} on {st.host or '?'} connected; clock "
                                f"offset {off.offset_ns / 1e3:+.1f} us +- {off.uncertainty_ns / 1e3:.1f} us",
                                **detail)
        st.seen = True

    def _read_metrics(self, st: _PartState) -> None:
        s = self._metrics[st.name].latest()
        if s is None or s.seq == st.metrics_seq or not isinstance(s.value, dict):
            return
        st.metrics_seq = s.seq
        m = s.value
        st.metrics = m
        st.host, st.pid = m.get("host", st.host), m.get("pid", st.pid)
        proc = m.get("process") or {}
        if st.alive and proc.get("cpu_percent") is not None:
            # The node's process is the part: its CPU and memory against the part's budget.
            self.recorder.utilization(st.name, float(proc["cpu_percent"]), proc.get("rss_mb"))

    def _publish_telemetry(self) -> None:
        assert self.telemetry is not None and self._telemetry_ch is not None
        arr = self.telemetry()
        if arr is not None:
            self._telemetry_ch.publish(np.asarray(arr, dtype=np.float64))

    # -- report and stop --------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The report's ``remote`` section: per part its host, presence, clock and figures."""
        parts = {}
        for n, st in self.parts.items():
            m = st.metrics or {}
            parts[n] = {
                "host": st.host, "pid": st.pid, "endpoint": st.settings.endpoint,
                "critical": st.settings.critical, "alive": st.alive, "lost": st.lost,
                "recovered": st.recovered, "failed": st.failed,
                "clock": None if st.offset is None else {**st.offset.to_dict(), "syncs": st.syncs},
                "node": {k: m.get(k) for k in ("uptime_s", "process", "components", "events") if k in m},
            }
        return {"robot": self.keys.robot, "host": self.settings.host, "mode": self.settings.mode,
                "parts": parts}

    def stop(self) -> None:
        """Stop the helper threads and close the session; bounded, idempotent."""
        self._stop.set()
        self._wake.set()
        if self._telemetry_pub is not None:
            self._telemetry_pub.stop()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._liveliness is not None:
            try:
                self._liveliness.undeclare()
            except Exception as exc:  # the session may be closing
                logger.debug("remote: liveliness undeclare failed: %s", exc)
            self._liveliness = None
        for ch in [*self._channels.values(), *self._metrics.values()]:
            ch.close()
        if self._telemetry_ch is not None:
            self._telemetry_ch.close()
        if self.session is not None:
            self.session.close()
            self.session = None


# -- the parts as the stack sees them -------------------------------------------------------

class _Poses:
    """Camera poses of recent frames, by frame seq (what the world model asks for)."""

    def __init__(self) -> None:
        self._poses: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, seq: int, pose: np.ndarray | None) -> None:
        if pose is None:
            return
        with self._lock:
            self._poses[seq] = pose
            while len(self._poses) > _POSES_KEPT:
                self._poses.popitem(last=False)

    def __call__(self, seq: int | None = None) -> np.ndarray:
        """The camera-to-world pose of frame ``seq`` (newest without one); KeyError if unknown."""
        with self._lock:
            if seq is None:
                if not self._poses:
                    raise KeyError("no frame from the remote camera yet")
                return next(reversed(self._poses.values()))
            return self._poses[seq]


class RemotePerception:
    """Detections from a remote ``rtvla node perception``, as the local pipeline gives them.

    A supervised unit like :class:`~rtvla.perception.VisionPipeline`: :meth:`run` relays the
    node's results into :attr:`channel` (a latest-value channel) with frame stamps on this
    host's clock, and records per result the node's processing latency, the frame's age on
    arrival and the one-way transport time, both corrected by the measured clock offset.
    :attr:`pose` answers the world model's camera pose per frame from what the node sent.
    """

    def __init__(self, link: RemoteLink, recorder: Recorder, *, name: str = "perception",
                 clock: Clock = MONOTONIC) -> None:
        self.link = link
        self.recorder = recorder
        self.name = name
        self.part = "perception"
        self.clock = clock
        self.channel = LatestValue(f"{name}.detections")
        self.pose = _Poses()
        self.stop_event = threading.Event()
        self.knobs: dict[str, Any] = {}
        self.on_worker_start: Any = None
        self.received = self.unsynced = self.malformed = self.stale_marked = 0
        self._last: Detections | None = None

    def run(self) -> None:
        ch = self.link.channel(self.link.keys.detections)
        seq = ch.seq
        marked = False
        while not self.stop_event.is_set():
            s = ch.wait_newer(seq, timeout=0.1)
            if s is None:
                if not self.link.alive(self.part) and self._last is not None and not marked:
                    self.channel.publish(self._last.as_stale())  # the world model stops using it
                    self.stale_marked += 1
                    marked = True
                continue
            seq = s.seq
            now = self.clock.now_ns()
            off = self.link.offset(self.part)
            if off is None:
                self.unsynced += 1  # its stamps mean nothing here until the clock is measured
                continue
            try:
                dets, pose = decode_detections(s.value, off.to_local, frame_seq=seq)
            except (KeyError, TypeError, ValueError) as exc:
                self.malformed += 1
                if self.malformed % 1000 == 1:
                    logger.warning("remote perception: dropped a malformed result: %s", exc)
                continue
            self.pose.put(seq, pose)
            self.received += 1
            self.recorder.latency(self.name, dets.processing_s)
            self.recorder.count(self.name)
            self.recorder.observe(self.name, "frame_age", (now - dets.frame_stamp_ns) / 1e9)
            self.recorder.observe(self.name, "transport", (now - off.to_local(s.stamp_ns)) / 1e9)
            self._last = dets
            marked = False
            self.channel.publish(dets)

    def stop(self) -> None:
        self.stop_event.set()

    def stats(self) -> dict[str, Any]:
        last = self._last
        return {"remote": True, "host": self.link.host(self.part), "received": self.received,
                "unsynced": self.unsynced, "malformed": self.malformed, "stale_marked": self.stale_marked,
                "last_frame_age_s": None if last is None else (self.clock.now_ns() - last.frame_stamp_ns) / 1e9,
                "detector": None if last is None else last.detector}


class RemoteCameraSource:
    """A frame source whose frames come from a remote ``rtvla node camera``.

    ``read()`` returns the newest frame with its stamp on this host's clock (None before the
    first one, or while the node's clock is not measured); frames are numbered here, so a
    restarted node never looks like it went back in time. :attr:`pose` gives the camera
    pose the node sent with each frame.
    """

    def __init__(self, link: RemoteLink, key: str, *, part: str = "camera", clock: Clock = MONOTONIC) -> None:
        self.link = link
        self.key = key
        self.part = part
        self.clock = clock
        self.pose = _Poses()
        self.received = 0
        self._ch: ZenohChannel | None = None
        self._frame: Frame | None = None
        self._seq = 0

    def open(self) -> None:
        self._ch = self.link.channel(self.key)

    def close(self) -> None:
        self._ch = None  # the link closes its channels

    def read(self) -> Frame | None:
        ch = self._ch
        if ch is None:
            return None
        s = ch.latest()
        if s is None or s.seq == self._seq:
            return self._frame
        off = self.link.offset(self.part)
        if off is None or not isinstance(s.value, dict):
            return self._frame
        v = s.value
        intr = v.get("intrinsics")
        self._seq = s.seq
        self.received += 1
        self.pose.put(s.seq, None if v.get("pose") is None else np.asarray(v["pose"], dtype=float))
        self._frame = Frame(v["image"], off.to_local(int(v["stamp_ns"])), s.seq, v.get("depth"),
                            None if intr is None else Intrinsics(*intr[:4], int(intr[4]), int(intr[5])))
        return self._frame
