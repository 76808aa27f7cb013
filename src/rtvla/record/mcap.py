"""``RunRecord``: a run's ``run.mcap`` (Foxglove schemas), optionally served live as well.

The ``log_*`` methods are called from the stack's loops, so they never wait: each puts a
small tuple on a bounded queue and returns (a full queue drops the message and counts
it). One writer thread does the work: JPEG-encodes camera frames (at ``camera_hz``, the
rest are skipped before they are queued), builds the Foxglove messages and hands them to
the Foxglove SDK's MCAP writer, which compresses chunks and writes the summary and index
on :meth:`RunRecord.close`. The same thread samples the metrics ``Recorder`` at
``timing_hz`` (rate, latency p50/p99, budget per component) and copies its new events and
violations into ``/log``.

All timestamps (message ``log_time`` and the messages' own stamps) are nanoseconds of the
clock the report uses (``rtvla.timing.MONOTONIC`` by default); the metadata record
``rtvla.clock`` holds ``wall_offset_ns`` (add it to get Unix time) so tools can show
wall-clock time.

Usage::

    with RunRecord(run_dir / "run.mcap", settings=RecordSettings(), recorder=rec) as record:
        record.log_frame("head", frame)                  # SimFrame-like: image, depth, intrinsics
        record.log_detections("head", detections)        # boxes on the image, cubes in 3D
        record.log_robot_state(state, joint_names)       # joint states + world -> base
        record.log_event("llm", "degraded", "timeout; fallback answered", level="warning")
    summarize_mcap(run_dir / "run.mcap")["channels"]

The file is valid only once :meth:`close` has run: call it where the report is written,
in the ``finally`` that also runs on Ctrl-C, SIGTERM and crashes (an ``atexit`` hook
closes a record that was forgotten, and a file cut off by SIGKILL keeps every finished
chunk, which ``mcap recover`` restores).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import foxglove
import numpy as np
from foxglove import channels as fgc
from foxglove.mcap import MCAPWriteOptions
from foxglove.messages import CompressedImage

from rtvla.errors import RecordError
from rtvla.record import channels as ch
from rtvla.record.settings import RecordSettings
from rtvla.timing import MONOTONIC, Clock

__all__ = ["RunRecord"]

logger = logging.getLogger(__name__)

_CALIBRATION_EVERY_NS = 5_000_000_000  # repeated so a live viewer joining late gets it
_SIZE_CHECK_NS = 250_000_000
_STOP = object()


class RunRecord:
    """Writes ``path`` (MCAP) from any thread without blocking it. See the module docstring.

    Args:
        path: the ``.mcap`` file to create (an existing file is an error unless ``overwrite``).
        settings: rates, JPEG quality, size bound, live view (``[record]``).
        recorder: a metrics ``Recorder`` whose per-component timing, events and violations
            are copied into the record (optional).
        clock: the report's clock; every stamp is in its nanoseconds.
        live: override ``settings.live`` (start the Foxglove WebSocket server).
        live_port: override ``settings.live_port`` (0 picks a free port; see :attr:`live_port`).
        metadata: extra ``str -> str`` written as the MCAP metadata record ``rtvla.run``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        settings: RecordSettings | None = None,
        recorder: Any = None,
        clock: Clock = MONOTONIC,
        live: bool | None = None,
        live_port: int | None = None,
        metadata: dict[str, str] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.settings = s = settings or RecordSettings()
        self.path = Path(path)
        self.clock = clock
        self.recorder = recorder
        self._ctx = foxglove.Context()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Compression on the writer thread only: the SDK's default pool of zstd threads
            # would compete with the control loop for the machine's cores.
            self._writer = foxglove.open_mcap(
                self.path, allow_overwrite=overwrite, context=self._ctx,
                writer_options=MCAPWriteOptions(compression_threads=0, profile="rtvla"))
        except Exception as exc:  # the SDK raises its own error types for I/O failures
            raise RecordError(f"cannot create the run record {self.path}: {exc}") from exc
        self._t0_ns = clock.now_ns()
        self._writer.write_metadata("rtvla.clock", {
            "clock": type(clock).__name__, "time_unit": "ns",
            "wall_offset_ns": str(time.time_ns() - self._t0_ns),
            "started_ns": str(self._t0_ns),
        })
        if metadata:
            self._writer.write_metadata("rtvla.run", {str(k): str(v) for k, v in metadata.items()})
        self._server: Any = None
        use_live = s.live if live is None else live
        if use_live:
            port = s.live_port if live_port is None else live_port
            try:
                self._server = foxglove.start_server(name="rtvla", host=s.live_host, port=port,
                                                     context=self._ctx)
            except Exception as exc:
                self._writer.close()
                raise RecordError(f"cannot start the live view on {s.live_host}:{port}: {exc}") from exc
            logger.info("live view: ws://%s:%d (Foxglove: open connection)", s.live_host,
                        self._server.port)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=s.queue_size)
        self._channels: dict[str, Any] = {}
        self._cam_period_ns = int(1e9 / s.camera_hz)
        self._depth_period_ns = int(1e9 / s.depth_hz) if s.depth_hz > 0 else 0
        self._last_image: dict[str, int] = {}
        self._last_depth: dict[str, int] = {}
        self._last_calib: dict[str, int] = {}
        self._closed = False
        self._close_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.dropped_queue = 0
        self.dropped_size = 0
        self.skipped_rate = 0
        self.errors = 0
        self.writer_cpu_s = 0.0
        self.bytes_written = 0
        self._size_full = False
        self._image_bytes = 0
        self._events_seen_ns = -1
        self._violations_seen_ns = -1
        self._thread = threading.Thread(target=self._run, name="rtvla-record", daemon=True)
        self._thread.start()
        self._atexit = _closer(weakref.ref(self))
        atexit.register(self._atexit)

    # -- properties ---------------------------------------------------------------------

    @property
    def live_port(self) -> int | None:
        """The live view's port (when ``live``), e.g. after asking for port 0."""
        return None if self._server is None else int(self._server.port)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- logging (any thread, never blocks) ---------------------------------------------

    def _put(self, item: tuple[Any, ...]) -> bool:
        if self._closed:
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._count_lock:  # producers are many threads: no lost counts
                self.dropped_queue += 1
            return False
        return True

    def _now(self, stamp_ns: int | None) -> int:
        return self.clock.now_ns() if stamp_ns is None else int(stamp_ns)

    def log_image(self, camera: str, image: np.ndarray, stamp_ns: int | None = None, *,
                  depth: np.ndarray | None = None, intrinsics: Any = None) -> bool:
        """An RGB ``uint8`` frame (and optionally its depth in metres and intrinsics).

        Frames closer than ``1 / camera_hz`` to the last recorded one are skipped (counted
        in :attr:`skipped_rate`); returns whether the frame was queued. The arrays are
        encoded later on the writer thread: pass frames nobody modifies afterwards (the
        simulator's frames are read-only).
        """
        t = self._now(stamp_ns)
        with self._count_lock:  # two threads logging one camera must not both pass
            last = self._last_image.get(camera)
            # 3/4 of a period: a poller at camera_hz sees frames up to a camera period early.
            if last is not None and t - last < self._cam_period_ns * 3 // 4:
                self.skipped_rate += 1
                return False
            self._last_image[camera] = t
        if depth is not None and self._depth_period_ns:
            last_d = self._last_depth.get(camera)
            if last_d is None or t - last_d >= self._depth_period_ns:
                self._last_depth[camera] = t
            else:
                depth = None
        else:
            depth = None
        if intrinsics is not None:
            last_c = self._last_calib.get(camera)
            if last_c is None or t - last_c >= _CALIBRATION_EVERY_NS:
                self._last_calib[camera] = t
            else:
                intrinsics = None
        return self._put(("image", t, camera, image, depth, intrinsics))

    def log_frame(self, camera: str, frame: Any) -> bool:
        """A frame with ``image``, ``stamp_ns`` and optional ``depth`` and ``intrinsics``."""
        return self.log_image(camera, frame.image, frame.stamp_ns,
                              depth=getattr(frame, "depth", None),
                              intrinsics=getattr(frame, "intrinsics", None))

    def log_detections(self, camera: str, detections: Any) -> bool:
        """A perception result (``items``, ``frame_stamp_ns``): 2D boxes and 3D cubes."""
        items = tuple(getattr(detections, "items", detections))
        t = self._now(getattr(detections, "frame_stamp_ns", None))
        return self._put(("detections", t, camera, items))

    def log_transforms(self, transforms: Iterable[tuple[str, str, Any]],
                       stamp_ns: int | None = None) -> bool:
        """``(parent, child, pose)`` triples; a pose is 4x4 or ``(xyz, quat_wxyz)``."""
        return self._put(("tf", self._now(stamp_ns), tuple(transforms)))

    def log_joint_states(self, names: Sequence[str], position: Sequence[float],
                         velocity: Sequence[float] | None = None,
                         effort: Sequence[float] | None = None, stamp_ns: int | None = None) -> bool:
        return self._put(("joints", self._now(stamp_ns), tuple(names), position, velocity, effort))

    def log_robot_state(self, state: Any, joint_names: Sequence[str], *,
                        extra_joints: dict[str, float] | None = None) -> bool:
        """A ``RobotState``: arm joints (+ ``gripper``) and the ``world -> base`` transform."""
        names = [*joint_names, "gripper", *(extra_joints or {})]
        pos = [*np.asarray(state.q, dtype=float).tolist(), float(state.gripper),
               *(extra_joints or {}).values()]
        vel = [*np.asarray(state.dq, dtype=float).tolist(), 0.0, *[0.0] * len(extra_joints or {})]
        eff = [*np.asarray(state.effort, dtype=float).tolist(), 0.0,
               *[0.0] * len(extra_joints or {})]
        t = int(state.stamp_ns)
        ok = self._put(("joints", t, tuple(names), pos, vel, eff))
        base = ch.base_pose_matrix(state.base_pose)
        return self._put(("tf", t, ((ch.WORLD_FRAME, ch.BASE_FRAME, base),))) and ok

    def log_path(self, path_xy: np.ndarray | None, stamp_ns: int | None = None) -> bool:
        """The navigation's global path (world ``(N, 2)``); None or empty clears it."""
        pts = np.zeros((0, 2)) if path_xy is None else np.array(path_xy, dtype=float).reshape(-1, 2)
        return self._put(("path", self._now(stamp_ns), pts))

    def log_goal(self, pose: Any, stamp_ns: int | None = None) -> bool:
        """The navigation goal: ``(x, y, yaw)`` in the world or any pose."""
        return self._put(("goal", self._now(stamp_ns), pose))

    def log_plan(self, instruction: str, actions: Sequence[Any], *, source: str = "",
                 degraded: bool = False, reason: str | None = None,
                 latency_s: float | None = None, stamp_ns: int | None = None) -> bool:
        """The validated plan (language ``Action``s or ``{"type", "parameters"}`` dicts)."""
        steps = []
        for i, a in enumerate(actions):
            if isinstance(a, dict):
                kind, name = str(a.get("type")), f"{a.get('type')}({a.get('parameters', {})})"
            else:
                kind = str(a.type)
                name = a.summary() if hasattr(a, "summary") else kind
            steps.append({"index": i, "type": kind, "name": name})
        msg = {"instruction": instruction, "source": source, "degraded": bool(degraded),
               "reason": reason or "", "latency_s": float(latency_s or 0.0), "steps": steps}
        return self._put(("json", self._now(stamp_ns), ch.TOPICS["plan"], "rtvla.Plan", msg))

    def log_step(self, progress: Any, stamp_ns: int | None = None) -> bool:
        """An executor ``Progress`` (index, count, name, status, phase, reason)."""
        status = getattr(progress.status, "value", progress.status)
        msg = {"index": int(progress.index), "count": int(progress.count), "name": str(progress.name),
               "status": str(status), "phase": str(progress.phase), "reason": str(progress.reason)}
        ok = self._put(("json", self._now(stamp_ns), ch.TOPICS["step"], "rtvla.PlanStep", msg))
        if status in ("failed", "timed_out", "canceled"):
            self.log_event("task", str(status), f"step {progress.index} {progress.name}: {progress.reason}",
                           level="error", stamp_ns=stamp_ns)
        return ok

    def log_event(self, component: str, kind: str, message: str, *, level: str = "info",
                  stamp_ns: int | None = None) -> bool:
        """An event, violation or degradation as a ``foxglove.Log`` line named ``component``."""
        return self._put(("log", self._now(stamp_ns), level, f"{kind}: {message}", component))

    def log_control(self, lateness_s: float, step_s: float | None = None, *, tick: int = 0,
                    stamp_ns: int | None = None) -> bool:
        """One control tick's wake-up lateness (and step time) on ``/control/timing``."""
        msg = {"lateness_us": float(lateness_s) * 1e6, "tick": int(tick)}
        if step_s is not None:
            msg["step_us"] = float(step_s) * 1e6
        return self._put(("json", self._now(stamp_ns), ch.TOPICS["control"], "rtvla.ControlTiming", msg))

    def log_control_series(self, lateness_us: Sequence[float], *, rate_hz: float = 100.0,
                           end_ns: int | None = None, first_tick: int = 0) -> bool:
        """Many ticks' lateness at once (a control process reports its ring when it stops):
        tick ``k`` is stamped ``end_ns - (n - 1 - k) / rate_hz`` (default end: now)."""
        samples = np.asarray(lateness_us, dtype=float).reshape(-1)
        return self._put(("control_series", self._now(end_ns), samples, int(1e9 / rate_hz), int(first_tick)))

    def log_json(self, topic: str, schema_name: str, message: dict[str, Any],
                 stamp_ns: int | None = None) -> bool:
        """A message on a JSON channel whose schema is in ``channels.JSON_SCHEMAS``."""
        if schema_name not in ch.JSON_SCHEMAS:
            raise RecordError(f"unknown JSON schema {schema_name!r}; known: {sorted(ch.JSON_SCHEMAS)}")
        return self._put(("json", self._now(stamp_ns), topic, schema_name, message))

    # -- the writer thread --------------------------------------------------------------

    def _channel(self, topic: str, make: Callable[[], Any]) -> Any:
        c = self._channels.get(topic)
        if c is None:
            c = self._channels[topic] = make()
        return c

    def _typed(self, topic: str, cls: Any) -> Any:
        return self._channel(topic, lambda: cls(topic, context=self._ctx))

    def _emit(self, topic: str, cls: Any, msg: Any, t: int) -> None:
        self._typed(topic, cls).log(msg, log_time=t)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def _emit_json(self, topic: str, schema: str, msg: dict[str, Any], t: int) -> None:
        c = self._channel(topic, lambda: foxglove.Channel(
            topic, schema=ch.json_schema(schema), message_encoding="json", context=self._ctx))
        c.log(msg, log_time=t)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def _write_image(self, t: int, camera: str, image: np.ndarray, depth: np.ndarray | None,
                     intrinsics: Any) -> None:
        if intrinsics is not None:
            self._emit(ch.TOPICS["calibration"].format(camera=camera), fgc.CameraCalibrationChannel,
                       ch.calibration_msg(t, camera, intrinsics), t)
        if self._size_full:
            self.dropped_size += 1
            return
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality])
        if not ok:
            raise RecordError(f"JPEG encoding failed for camera {camera!r} frame of shape {image.shape}")
        self._emit(ch.TOPICS["image"].format(camera=camera), fgc.CompressedImageChannel,
                   CompressedImage(timestamp=ch.stamp(t), frame_id=ch.camera_frame(camera),
                                   data=jpeg.tobytes(), format="jpeg"), t)
        self._image_bytes += len(jpeg)
        if depth is not None:
            self._emit(ch.TOPICS["depth"].format(camera=camera), fgc.RawImageChannel,
                       ch.depth_msg(t, camera, depth), t)
            self._image_bytes += depth.size  # 16-bit millimetres compress to about half
        if self._image_bytes >= self.settings.max_mb * 1e6:
            self._check_size()

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind, t = item[0], item[1]
        if kind == "image":
            self._write_image(t, *item[2:])
        elif kind == "detections":
            camera, items = item[2], item[3]
            self._emit(ch.TOPICS["annotations"].format(camera=camera), fgc.ImageAnnotationsChannel,
                       ch.annotations_msg(t, items), t)
            self._emit(ch.TOPICS["detections"], fgc.SceneUpdateChannel,
                       ch.scene_update_msg(t, camera, items), t)
        elif kind == "tf":
            self._emit(ch.TOPICS["tf"], fgc.FrameTransformsChannel, ch.transforms_msg(t, item[2]), t)
        elif kind == "joints":
            self._emit(ch.TOPICS["joints"], fgc.JointStatesChannel, ch.joint_states_msg(t, *item[2:]), t)
        elif kind == "path":
            self._emit(ch.TOPICS["path"], fgc.PosesInFrameChannel, ch.path_msg(t, item[2]), t)
        elif kind == "goal":
            self._emit(ch.TOPICS["goal"], fgc.PoseInFrameChannel, ch.pose_msg(t, item[2]), t)
        elif kind == "log":
            self._emit(ch.TOPICS["log"], fgc.LogChannel, ch.log_msg(t, item[2], item[3], item[4]), t)
        elif kind == "json":
            self._emit_json(item[2], item[3], item[4], t)
        elif kind == "control_series":
            samples, period, first = item[2], item[3], item[4]
            n = len(samples)
            for k, late in enumerate(samples):
                self._emit_json(ch.TOPICS["control"], "rtvla.ControlTiming",
                                {"lateness_us": float(late), "tick": first + k}, t - (n - 1 - k) * period)
        else:  # pragma: no cover - every producer above is in this module
            raise RecordError(f"unknown record item kind {kind!r}")

    def _sample_recorder(self) -> None:
        """Per-component timing rows, and the recorder's new events and violations."""
        rec = self.recorder
        if rec is None:
            return
        t = self.clock.now_ns()
        for name, row in rec.snapshot().items():
            lat = row.get("latency_ms") or {}
            b = row.get("budget") or {}
            msg = {
                "component": name, "rate_hz": _num(row.get("rate_hz")),
                "achieved_hz": _num(row.get("achieved_hz")), "count": int(row.get("count") or 0),
                "latency_p50_ms": _num(lat.get("p50")), "latency_p99_ms": _num(lat.get("p99")),
                "latency_max_ms": _num(lat.get("max")), "budget_latency_ms": _num(b.get("max_latency_ms")),
                "budget_rate_hz": _num(b.get("rate_hz") or b.get("min_throughput_hz")),
                "missed": int(row.get("missed") or 0),
                "violations": int(sum((row.get("violations") or {}).values())),
                "cpu_percent": _num(row.get("cpu_percent")),
            }
            self._emit_json(ch.TOPICS["timing"].format(component=name), "rtvla.ComponentTiming", msg, t)
        for ev in list(rec.events):
            if ev.stamp_ns > self._events_seen_ns:
                level = "warning" if ev.kind in ("degraded", "fault", "watchdog", "stale") else "info"
                self._emit(ch.TOPICS["log"], fgc.LogChannel,
                           ch.log_msg(ev.stamp_ns, level, f"{ev.kind}: {ev.message}", ev.component),
                           ev.stamp_ns)
                self._events_seen_ns = ev.stamp_ns
        for v in list(rec.violation_log):
            if v["stamp_ns"] > self._violations_seen_ns:
                self._emit(ch.TOPICS["log"], fgc.LogChannel, ch.log_msg(
                    v["stamp_ns"], "warning",
                    f"budget violated: {v['kind']} {v['value']:.3f} (limit {v['limit']:.3f})",
                    v["component"]), v["stamp_ns"])
                self._violations_seen_ns = v["stamp_ns"]

    def _check_size(self) -> None:
        try:
            self.bytes_written = os.path.getsize(self.path)
        except OSError:
            return
        # The file grows a chunk (about 1 MB) at a time: the image bytes handed to the writer
        # are the earlier and closer measure of what it will hold.
        size = max(self.bytes_written, self._image_bytes)
        if not self._size_full and size >= self.settings.max_mb * 1e6:
            self._size_full = True
            logger.warning("run record %s reached %.0f MB: camera images are no longer recorded",
                           self.path, self.settings.max_mb)

    def _run(self) -> None:
        period_ns = int(1e9 / self.settings.timing_hz)
        next_sample = self.clock.now_ns() + period_ns
        next_size = 0
        cpu0 = time.thread_time()
        while True:
            timeout = max(0.0, (next_sample - MONOTONIC.now_ns()) / 1e9)
            try:
                item = self._queue.get(timeout=min(timeout, 0.25))
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            try:
                if item is not None:
                    self._handle(item)
                now = MONOTONIC.now_ns()
                if now >= next_sample:
                    next_sample = now + period_ns
                    self._sample_recorder()
                if now >= next_size:
                    next_size = now + _SIZE_CHECK_NS
                    self._check_size()
            except Exception:  # one bad message must not end the record
                self.errors += 1
                if self.errors <= 3:
                    logger.exception("run record: writing a message failed")
            self.writer_cpu_s = time.thread_time() - cpu0
        self.writer_cpu_s = time.thread_time() - cpu0

    # -- closing ------------------------------------------------------------------------

    def close(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Write what is queued, the summary and the index; returns :meth:`stats`. Idempotent.

        Messages still queued after ``timeout_s`` are dropped (counted) so that closing a
        run takes bounded time.
        """
        with self._close_lock:
            if self._closed:
                return self.stats()
            self._closed = True
            atexit.unregister(self._atexit)
            with contextlib.suppress(queue.Full):  # the writer is stuck: join's timeout ends it
                self._queue.put(_STOP, timeout=timeout_s)
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("run record writer did not finish within %.1f s", timeout_s)
            self.dropped_queue += self._queue.qsize()
            try:
                self._sample_recorder()
            except Exception:
                logger.exception("run record: last timing sample failed")
            try:
                self._writer.write_metadata("rtvla.record", {k: str(v) for k, v in self.stats().items()
                                                             if k != "counts"})
                self._writer.close()
            except Exception as exc:
                raise RecordError(f"closing the run record {self.path} failed: {exc}") from exc
            finally:
                if self._server is not None:
                    self._server.stop()
                    self._server = None
            self._check_size()
        logger.info("run record %s: %d messages, %.1f MB, %d dropped", self.path,
                    sum(self.counts.values()), self.bytes_written / 1e6,
                    self.dropped_queue + self.dropped_size)
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """What was recorded and what it cost (for the report)."""
        elapsed = max(1e-9, (self.clock.now_ns() - self._t0_ns) / 1e9)
        return {
            "path": str(self.path),
            "messages": sum(self.counts.values()),
            "counts": dict(self.counts),
            "bytes": self.bytes_written,
            "dropped_queue": self.dropped_queue,
            "dropped_size": self.dropped_size,
            "skipped_rate": self.skipped_rate,
            "errors": self.errors,
            "writer_cpu_s": self.writer_cpu_s,
            "writer_cpu_percent": 100.0 * self.writer_cpu_s / elapsed,
            "live_port": self.live_port,
        }

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _num(value: Any) -> float:
    """JSON numbers only (NaN/None become 0 so Foxglove plots stay continuous)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return v if np.isfinite(v) else 0.0


def _closer(ref: weakref.ReferenceType[RunRecord]) -> Callable[[], None]:
    def close() -> None:
        rec = ref()
        if rec is not None and not rec.closed:
            logger.warning("run record %s was not closed; closing it at exit", rec.path)
            rec.close(timeout_s=2.0)
    return close
