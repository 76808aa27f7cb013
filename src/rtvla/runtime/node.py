"""``rtvla node PART``: one part of a stack in its own process, on this host or another.

A node builds the part from the same config as the stack (``[robot]``, ``[[cameras]]``,
``[perception]``), connects through the Zenoh session that ``[remote]`` describes, and offers
under ``rtvla/<robot>/``:

* ``camera``: the camera's frames on ``camera/<name>`` (image, depth, intrinsics, the camera
  pose of the frame, its stamp on this host's clock);
* ``perception``: camera plus the vision pipeline; each result on ``detections`` with the
  pose of its frame, so the stack's world model places it where the camera was;
* ``metrics/<part>`` once per ``metrics_interval_s``: the node's recorder (latency
  percentiles, rates), its process CPU and memory, host and pid;
* a liveliness token ``alive/<part>/<host>`` once the part delivers (its presence for the stack);
* a clock-sync server on ``clock/<part>`` (the stack measures the offset between clocks).

A robot whose plug-in mirrors telemetry (the simulator's ``qpos``) gets it from the stack on
``telemetry``: the node's cameras then render the robot that the stack drives. A real camera
just reads its device. A policy node is ``rtvla serve-policy`` (openpi websocket protocol).

Usage::

    node = Node("perception", load_config("node.toml"))
    node.start()
    node.wait(stop_event)        # until SIGINT/SIGTERM set it
    node.stop()
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import numpy as np
import psutil

from rtvla.channels import ZenohChannel
from rtvla.channels.clock_sync import ClockSyncServer
from rtvla.config import Config
from rtvla.errors import ChannelError, ConfigError, RuntimeStackError
from rtvla.metrics import Recorder, build_report
from rtvla.runtime.remote_parts import REMOTE_PARTS, RemoteKeys, RemoteSettings, encode_detections
from rtvla.runtime.supervisor import Supervisor
from rtvla.runtime.wiring import OpenedCamera, build_embodiment, camera_specs, open_cameras
from rtvla.timing import MONOTONIC, Clock, Periodic

__all__ = ["Node"]

logger = logging.getLogger(__name__)


class Node:
    """One part (``camera`` or ``perception``) served over Zenoh. See the module docstring."""

    def __init__(self, part: str, cfg: Config, *, camera: str | None = None, recorder: Recorder | None = None,
                 clock: Clock = MONOTONIC) -> None:
        if part not in REMOTE_PARTS:
            raise ConfigError(f"rtvla node: unknown part {part!r}; parts: {', '.join(REMOTE_PARTS)} "
                              "(a policy node is `rtvla serve-policy`)")
        self.part = part
        self.cfg = cfg
        self.settings = RemoteSettings.from_section(cfg.section("remote"))
        if not self.settings.reachable():
            raise ConfigError(f"node {part}: [remote] has no listen or connect endpoint (and multicast "
                              "scouting is off): nothing could reach it; e.g. listen = [\"tcp/0.0.0.0:7447\"]")
        self.camera_name = camera
        self.recorder = recorder if recorder is not None else Recorder(cfg.requirements)
        self.clock = clock
        self.host = self.settings.host
        self.keys: RemoteKeys | None = None
        self.session: Any = None
        self.emb: Any = None
        self.cam: OpenedCamera | None = None
        self.pipeline: Any = None
        self.supervisor = Supervisor(self.recorder, on_critical_failure=self._failed)
        self.failure: str | None = None
        self.published = 0
        self._delivered = threading.Event()
        self._out: ZenohChannel | None = None
        self._telemetry: ZenohChannel | None = None
        self._metrics_ch: ZenohChannel | None = None
        self._metrics: Periodic | None = None
        self._clock_server: ClockSyncServer | None = None
        self._token: Any = None
        self._proc = psutil.Process()
        self._started_ns = clock.now_ns()
        self._closers: list[tuple[str, Any]] = []

    # -- start ------------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        """Build the part, connect, and declare the liveliness token once it delivers."""
        import zenoh

        try:
            self._start(zenoh, timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, zenoh: Any, timeout_s: float) -> None:
        emb = build_embodiment(self.cfg, self.recorder)
        self._closers.append(("embodiment", emb.close))
        self.keys = RemoteKeys(self.settings.robot or emb.name)
        try:
            self.session = zenoh.open(self.settings.session_config())
        except Exception as exc:
            raise ChannelError(f"node {self.part}: cannot open the zenoh session "
                               f"(listen={self.settings.listen}, connect={self.settings.connect}): {exc}") from exc
        if emb.telemetry is not None:
            # The robot runs under the stack: its cameras follow the state the stack sends.
            self._telemetry = ZenohChannel(self.keys.telemetry, session=self.session, clock=self.clock)
            ch = self._telemetry

            def latest() -> np.ndarray | None:
                s = ch.latest()
                return None if s is None else np.asarray(s.value, dtype=float)

            emb = emb.hosted(emb.robot, latest)
        self.emb = emb
        self.cam = self._camera(emb)
        self.cam.source.open()
        self._closers.append(("camera", self.cam.source.close))
        if self.part == "perception":
            self._start_perception()
        else:
            self._start_camera()
        self.supervisor.start()
        self._closers.append(("supervisor", self.supervisor.stop))
        self._clock_server = ClockSyncServer(self.session, self.keys.clock(self.part), clock_ns=self.clock.now_ns)
        self._metrics_ch = ZenohChannel(self.keys.metrics(self.part), session=self.session, clock=self.clock)
        self._metrics = Periodic(self.settings.metrics_interval_s, self.publish_metrics,
                                 name="rtvla-node-metrics").start()
        deadline = time.monotonic() + timeout_s
        while self.published == 0:
            if time.monotonic() > deadline:
                raise RuntimeStackError(f"node {self.part}: nothing to publish within {timeout_s:g} s "
                                        f"(camera {self.cam.name!r} delivered no frame)")
            self._delivered.wait(0.1)
        self._token = self.session.liveliness().declare_token(self.keys.alive(self.part, self.host))
        logger.info("node %s up on %s: keys rtvla/%s/..., listen %s, connect %s", self.part, self.host,
                    self.keys.robot, self.settings.listen, self.settings.connect)

    def _camera(self, emb: Any) -> OpenedCamera:
        cams = open_cameras(camera_specs(self.cfg, emb), emb)
        if not cams:
            raise ConfigError(f"node {self.part}: robot {emb.name!r} carries no camera and [[cameras]] names none")
        if self.camera_name is None:
            cam = cams[0]
        else:
            named = [c for c in cams if c.name == self.camera_name]
            if not named:
                raise ConfigError(f"node {self.part}: --camera {self.camera_name!r} is not among "
                                  f"{', '.join(c.name for c in cams)}")
            cam = named[0]
        if self.part == "perception" and cam.pose_fn is None:
            raise ConfigError(f"node perception: camera {cam.name!r} is not one the robot carries; its "
                              "detections could not be placed in the world")
        return cam

    def _start_perception(self) -> None:
        from rtvla.runtime.stack import camera_pipeline

        assert self.cam is not None and self.keys is not None
        pipe = camera_pipeline(self.cfg, self.emb, self.cam, self.recorder, primary=True)
        self.pipeline = pipe
        self._out = ZenohChannel(self.keys.detections, session=self.session, clock=self.clock)

        def run_pipeline(stop: threading.Event) -> Any:
            pipe.stop_event.clear()
            return pipe.run()

        self.supervisor.add("perception", run_pipeline, critical=True, stop=pipe.stop)
        self.supervisor.add("forward", self._forward_detections, critical=True)

    def _forward_detections(self, stop: threading.Event) -> None:
        assert self._out is not None and self.cam is not None
        src, cam = self.pipeline.channel, self.cam
        seq = src.seq if hasattr(src, "seq") else 0
        while not stop.is_set():
            s = src.wait_newer(seq, timeout=0.1)
            if s is None:
                continue
            seq = s.seq
            dets = s.value
            try:
                pose = cam.pose_fn(seq=dets.frame_seq)
            except KeyError:
                pose = None  # older than the pose history: the stack will not place it
            self._out.publish(encode_detections(dets, pose, cam.name))
            self.published += 1
            self._delivered.set()

    def _start_camera(self) -> None:
        assert self.cam is not None and self.keys is not None
        self._out = ZenohChannel(self.keys.camera(self.cam.name), session=self.session, clock=self.clock)
        self.supervisor.add("camera", self._forward_frames, critical=True)

    def _forward_frames(self, stop: threading.Event) -> None:
        assert self._out is not None and self.cam is not None
        cam = self.cam
        rate = cam.rate_hz or 30.0
        last = -1
        while not stop.wait(0.5 / rate):  # twice the camera rate: no frame waits a whole period
            frame = cam.source.read()
            if frame is None or frame.seq == last:
                continue
            last = frame.seq
            t0 = self.clock.now_ns()
            pose = None
            if cam.pose_fn is not None:
                try:
                    pose = cam.pose_fn(seq=frame.seq)
                except KeyError:
                    pose = cam.pose_fn()
            k = frame.intrinsics or cam.intrinsics
            msg: dict[str, Any] = {"image": frame.image, "stamp_ns": int(frame.stamp_ns), "seq": int(frame.seq),
                                   "pose": None if pose is None else np.asarray(pose, dtype=np.float64),
                                   "intrinsics": None if k is None else [float(k.fx), float(k.fy), float(k.cx),
                                                                         float(k.cy), int(k.width), int(k.height)]}
            if frame.depth is not None:
                msg["depth"] = frame.depth
            self._out.publish(msg)
            self.recorder.latency("camera", (self.clock.now_ns() - t0) / 1e9)
            self.recorder.count("camera")
            self.recorder.observe("camera", "frame_age", (self.clock.now_ns() - frame.stamp_ns) / 1e9)
            self.published += 1
            self._delivered.set()

    # -- figures ----------------------------------------------------------------------------

    def publish_metrics(self) -> None:
        """Send the node's figures on ``metrics/<part>`` (JSON)."""
        if self._metrics_ch is None:
            return
        cpu = self._proc.cpu_percent(interval=None)
        rss = self._proc.memory_info().rss / 2**20
        self.recorder.utilization(self.part, cpu, rss)
        report = build_report(self.recorder, check=False)
        self._metrics_ch.publish({
            "part": self.part, "host": self.host, "pid": os.getpid(), "published": self.published,
            "uptime_s": round((self.clock.now_ns() - self._started_ns) / 1e9, 3),
            "process": {"cpu_percent": cpu, "rss_mb": round(rss, 1)},
            "components": report["components"], "events": report["events"][-20:],
        })

    def summary(self) -> dict[str, Any]:
        out = {"part": self.part, "host": self.host, "published": self.published,
               "components": build_report(self.recorder, check=False)["components"]}
        if self.pipeline is not None:
            out["perception"] = self.pipeline.stats()
        return out

    # -- run and stop -----------------------------------------------------------------------

    def _failed(self, name: str, message: str) -> None:
        self.failure = f"{name}: {message}"

    def wait(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set (the CLI sets it on SIGINT/SIGTERM); raises
        :class:`RuntimeStackError` when the part failed for good (its restarts exhausted)."""
        while not stop.wait(0.25):
            if self.failure is not None:
                raise RuntimeStackError(f"node {self.part}: {self.failure}")

    def stop(self) -> None:
        """Withdraw the token first (the stack sees the part go), then stop everything; bounded."""
        if self._token is not None:
            try:
                self._token.undeclare()
            except Exception as exc:
                logger.debug("node: token undeclare failed: %s", exc)
            self._token = None
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        for what, close in reversed(self._closers):
            try:
                close()
            except Exception as exc:  # stopping goes on whatever one part does
                logger.warning("node %s: closing %s failed: %s", self.part, what, exc)
        self._closers.clear()
        if self._clock_server is not None:
            self._clock_server.close()
            self._clock_server = None
        for ch in (self._out, self._telemetry, self._metrics_ch):
            if ch is not None:
                ch.close()
        self._out = self._telemetry = self._metrics_ch = None
        if self.session is not None:
            self.session.close()
            self.session = None
