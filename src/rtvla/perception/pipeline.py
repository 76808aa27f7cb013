"""The real-time vision pipeline (the reference chapter's OptimizedVisionSystem, for real).

Each cycle of its :class:`~rtvla.timing.RateLoop` (the perception budget's rate, 30 Hz by
default) takes the *newest* frame from the source, never a queued one: frames that arrived
since the last cycle are counted as dropped. Then: resize to the ``resolution`` knob,
preprocess, detect (on a worker thread, bounded by ``detect_timeout_s``), filter (minimum
confidence, maximum count, class allow-list), attach 3D positions when the frame has depth
and intrinsics, and publish :class:`~rtvla.perception.detections.Detections` to a
latest-value channel.

Measured into the :class:`~rtvla.metrics.Recorder` under ``"perception"``: each stage with
``observe(component, stage, s)`` (``grab``, ``resize``, ``preprocess``, ``detect``,
``filter``), ``frame_age`` (publish time minus capture stamp), the processing latency with
``latency()`` and one ``count()`` per published result; gauges ``dropped``, ``skipped``,
``timeouts``, ``stale_processed``, ``degraded``. A detection that overruns its timeout
re-publishes the previous result marked stale instead of blocking the loop; a source that
stops delivering for ``source_timeout_s`` records a ``degraded`` event, and a ``recovered``
event when frames return.

Usage::

    pipe = VisionPipeline(OpenCVSource(0), ColorDetector(), recorder=rec)
    threading.Thread(target=pipe.run, daemon=True).start()
    sample = pipe.channel.wait_newer(0, timeout=1.0)     # Sample(Detections, stamp, seq)
    pipe.knobs["resolution"].set_value((320, 240))       # the adaptive optimizer's lever
    pipe.stop()
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import cv2
import numpy as np

from rtvla.channels import LatestValue
from rtvla.component import Component, Knob
from rtvla.config import Budget
from rtvla.errors import ConfigError, FrameError, PerceptionError
from rtvla.metrics import Recorder
from rtvla.perception.detections import (
    Detections,
    Detector,
    StagedDetector,
    filter_detections,
    locate,
    scale_detections,
)
from rtvla.perception.frames import FrameLike, FrameSource, check_depth, check_image
from rtvla.timing import MONOTONIC, Clock, LoopStats, RateLoop, Tick

__all__ = ["DEFAULT_RESOLUTIONS", "PipelineSettings", "PipelineStatus", "VisionPipeline"]

logger = logging.getLogger(__name__)

DEFAULT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((640, 480), (480, 360), (320, 240))


class PipelineStatus(str, Enum):
    """What one cycle did (hot loops return status values, not exceptions)."""

    PUBLISHED = "published"
    NO_FRAME = "no_frame"  # nothing newer than the last frame
    SKIPPED = "skipped"  # frame skipped by the skip_frames knob
    BUSY = "busy"  # the detector is still working on a timed-out frame
    TIMEOUT = "timeout"  # detection overran detect_timeout_s; stale result re-published
    BAD_FRAME = "bad_frame"  # the source delivered a frame of the wrong shape/dtype
    FAILED = "failed"  # the detector raised


@dataclass(frozen=True)
class PipelineSettings:
    """Pipeline parameters, validated once. Knob value lists are best quality first.

    ``grab_wait_s``: how long a cycle may wait for a frame newer than the last one when the
    source offers ``wait_newer`` (aligns the loop with the camera instead of aliasing
    against it); None means a quarter of the period.
    """

    resolutions: tuple[tuple[int, int], ...] = DEFAULT_RESOLUTIONS
    skip_frames: tuple[int, ...] = (1, 2, 3)
    min_confidence: float = 0.5
    max_detections: int = 20
    allow: frozenset[str] | None = None
    detect_timeout_s: float | None = 0.1
    source_timeout_s: float = 0.5
    grab_wait_s: float | None = None
    keep_image: bool = False
    # After a cycle that overran (a slow detector), run the next one at once on the newest
    # frame ("catch_up") instead of idling to the next slot ("skip") with a frame waiting.
    overrun: str = "catch_up"

    def __post_init__(self) -> None:
        if not self.resolutions:
            raise ConfigError("perception.resolutions needs at least one WxH")
        if self.overrun not in ("skip", "catch_up"):
            raise ConfigError(f"perception.overrun must be 'skip' or 'catch_up', got {self.overrun!r}")
        for r in self.resolutions:
            if len(r) != 2 or not all(isinstance(v, int) and v >= 16 for v in r):
                raise ConfigError(f"perception.resolutions entries must be (w, h) >= 16, got {r!r}")
        if not self.skip_frames or not all(isinstance(n, int) and n >= 1 for n in self.skip_frames):
            raise ConfigError(f"perception.skip_frames must be ints >= 1, got {self.skip_frames!r}")
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError(f"perception.min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.max_detections < 1:
            raise ConfigError(f"perception.max_detections must be >= 1, got {self.max_detections}")
        if self.detect_timeout_s is not None and not self.detect_timeout_s > 0:
            raise ConfigError(f"perception.detect_timeout_s must be > 0, got {self.detect_timeout_s}")
        if not self.source_timeout_s > 0:
            raise ConfigError(f"perception.source_timeout_s must be > 0, got {self.source_timeout_s}")
        if self.grab_wait_s is not None and self.grab_wait_s < 0:
            raise ConfigError(f"perception.grab_wait_s must be >= 0, got {self.grab_wait_s}")


@dataclass
class _Result:
    detections: Detections
    stages_ns: dict[str, int]
    done_ns: int


class VisionPipeline(Component):
    """Latest-frame vision pipeline as a :class:`~rtvla.component.Component`.

    Args:
        source: any :class:`~rtvla.perception.frames.FrameSource`.
        detectors: one detector, or several variants (best first) for the ``detector`` knob.
        settings: :class:`PipelineSettings`.
        recorder, budget, rate_hz: as for every component (rate defaults to the budget's).
        channel: where ``Detections`` go; a new ``LatestValue`` when omitted.
        clock: time source for stamps, stage timings and timeouts.
        own_source: open the source in ``setup`` and close it in ``teardown``.
    """

    def __init__(
        self,
        source: FrameSource,
        detectors: Detector | Sequence[Detector],
        *,
        settings: PipelineSettings | None = None,
        recorder: Recorder | None = None,
        budget: Budget | None = None,
        rate_hz: float | None = None,
        channel: LatestValue | None = None,
        clock: Clock = MONOTONIC,
        own_source: bool = True,
        name: str = "perception",
    ) -> None:
        super().__init__(name, budget=budget, recorder=recorder, rate_hz=rate_hz)
        if self.rate_hz is None:
            raise ConfigError(f"component {name!r} needs a rate: its budget has no rate_hz")
        dets = [detectors] if isinstance(detectors, Detector) else list(detectors)
        if not dets:
            raise ConfigError("perception needs at least one detector")
        names = [d.name for d in dets]
        if len(set(names)) != len(names):
            raise ConfigError(f"detector variants need distinct names, got {names}")
        self.detectors = {d.name: d for d in dets}
        self.settings = settings or PipelineSettings()
        self.source = source
        self.own_source = own_source
        self.clock = clock
        self.channel = channel if channel is not None else LatestValue(f"{name}.detections",
                                                                        clock=clock)
        # A source that can render or capture at another size (the simulator's camera) follows
        # the knob, so a lower level cuts the capture's cost too, not only the detector's.
        self.add_knob(Knob("resolution", self.settings.resolutions, on_change=self._source_size))
        prepare = getattr(source, "prepare_sizes", None)
        if callable(prepare):
            prepare(self.settings.resolutions)
        self.add_knob(Knob("skip_frames", self.settings.skip_frames))
        self.add_knob(Knob("detector", tuple(names)))
        self._executor: cf.ThreadPoolExecutor | None = None
        # Called in each detector worker thread as it starts (the runtime attributes the
        # thread's CPU to perception and pins it where perception runs).
        self.on_worker_start: Callable[[], None] | None = None
        self._inflight: cf.Future[_Result] | None = None
        self._last: Detections | None = None
        self._last_seq: int | None = None
        self._last_new_ns: int | None = None
        self._degraded_since: int | None = None
        self._stale_announced = False
        self.frames_seen = 0
        self.processed = 0
        self.dropped = 0
        self.skipped = 0
        self.timeouts = 0
        self.stale_processed = 0
        self.bad_frames = 0
        self.failures = 0
        self.degraded_episodes = 0
        self._loop: RateLoop | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        return self._degraded_since is not None

    @property
    def busy(self) -> bool:
        """True while a timed-out detection is still running on the worker."""
        fut = self._inflight
        return fut is not None and not fut.done()

    def setup(self) -> None:
        if self.own_source:
            self.source.open()
        if self.settings.detect_timeout_s is not None and self._executor is None:
            self._executor = cf.ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-detect",
                                                   initializer=self.on_worker_start)
        self._last_new_ns = self.clock.now_ns()

    def teardown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._inflight = None
        if self.own_source:
            self.source.close()

    def run(self, *, duration_s: float | None = None, max_ticks: int | None = None) -> LoopStats:
        """setup, step at ``rate_hz`` until :meth:`stop` (or the limits), teardown."""
        self._loop = RateLoop(self.rate_hz, clock=self.clock, stop_event=self.stop_event,
                              overrun=self.settings.overrun, name=self.name)
        try:
            self.setup()
            stats = self._loop.run(self.step, duration_s=duration_s, max_ticks=max_ticks)
        finally:
            self.teardown()
        if stats.missed:
            self.recorder.miss(self.name, stats.missed)
        return stats

    # -- one cycle ------------------------------------------------------------------------

    def _read(self) -> FrameLike | None:
        try:
            return self.source.read()
        except PerceptionError as exc:
            logger.debug("source read failed: %s", exc)
            return None

    def _grab(self) -> FrameLike | None:
        try:
            frame = self.source.read()
            if (frame is None or frame.seq == self._last_seq) and self._last_seq is not None:
                wait_newer = getattr(self.source, "wait_newer", None)
                if wait_newer is not None:
                    wait = self.settings.grab_wait_s
                    if wait is None:
                        wait = 0.25 / self.rate_hz
                    if wait > 0:
                        newer = wait_newer(self._last_seq, wait)
                        frame = newer if newer is not None else frame
        except PerceptionError as exc:
            logger.debug("source read failed: %s", exc)
            return None
        return frame

    def step(self, tick: Tick | None = None) -> PipelineStatus:
        """One cycle; returns what happened (see :class:`PipelineStatus`)."""
        rec, name = self.recorder, self.name
        if self._inflight is not None:
            if not self._inflight.done():
                frame = self._read()
                if frame is not None and frame.seq != self._last_seq:
                    self._count_new(frame)
                    self.dropped += 1  # arrived while the detector was busy
                return PipelineStatus.BUSY
            fut, self._inflight = self._inflight, None
            late = self._collect(fut)
            if late is not None:
                self._publish(late, stale=True)
        t0 = self.clock.now_ns()
        frame = self._grab()
        t1 = self.clock.now_ns()
        if frame is None or frame.seq == self._last_seq:
            self._check_source(t1)
            return PipelineStatus.NO_FRAME
        rec.observe(name, "grab", (t1 - t0) / 1e9)
        self._count_new(frame)
        if self.frames_seen % int(self.knob("skip_frames")) != 0:
            self.skipped += 1
            return PipelineStatus.SKIPPED
        newest = self._read()
        if newest is not None and newest.seq > frame.seq:
            # A newer frame landed while this one was grabbed: process the newest (the
            # grabbed one counts as dropped), never a frame that is already superseded.
            self._count_new(newest)
            self.dropped += 1
            frame = newest
            again = self._read()
            if again is not None and again.seq > frame.seq:
                self.stale_processed += 1  # superseded twice within one grab: count, go on
        try:
            check_image(frame.image)
            if frame.depth is not None:
                check_depth(frame.depth, frame.image.shape)
        except FrameError as exc:
            self.bad_frames += 1
            if self.bad_frames == 1:
                rec.event(name, "bad_frame", str(exc), seq=frame.seq)
            return PipelineStatus.BAD_FRAME
        detector = self.detectors[self.knob("detector")]
        resolution = tuple(self.knob("resolution"))
        timeout = self.settings.detect_timeout_s
        if self._executor is None or timeout is None:
            try:
                result = self._process(frame, detector, resolution)
            except PerceptionError as exc:
                return self._failed(exc)
        else:
            fut = self._executor.submit(self._process, frame, detector, resolution)
            try:
                result = fut.result(timeout=timeout)
            except cf.TimeoutError:
                self._inflight = fut
                self.timeouts += 1
                rec.gauge(name, "timeouts", self.timeouts)
                if self._last is not None and not self._last.stale:
                    self._publish_stale()
                return PipelineStatus.TIMEOUT
            except PerceptionError as exc:
                return self._failed(exc)
        self._publish(result)
        return PipelineStatus.PUBLISHED

    def _count_new(self, frame: FrameLike) -> None:
        now = self.clock.now_ns()
        if self._last_seq is not None and frame.seq > self._last_seq + 1:
            self.dropped += frame.seq - self._last_seq - 1
            self.recorder.gauge(self.name, "dropped", self.dropped)
        self._last_seq = frame.seq
        self._last_new_ns = now
        self.frames_seen += 1
        if self._degraded_since is not None:
            outage = (now - self._degraded_since) / 1e9
            self._degraded_since = None
            self.recorder.gauge(self.name, "degraded", 0)
            self.recorder.event(self.name, "recovered",
                                f"frames are back after {outage:.2f} s", outage_s=outage,
                                seq=frame.seq)

    def _check_source(self, now: int) -> None:
        if self._degraded_since is not None or self._last_new_ns is None:
            return
        quiet = (now - self._last_new_ns) / 1e9
        if quiet >= self.settings.source_timeout_s:
            self._degraded_since = self._last_new_ns
            self.degraded_episodes += 1
            self.recorder.gauge(self.name, "degraded", 1)
            status = getattr(self.source, "status", None)
            self.recorder.event(
                self.name, "degraded", f"no new frame from the source for {quiet:.2f} s",
                last_seq=self._last_seq, source_status=getattr(status, "value", status),
            )
            if self._last is not None and not self._last.stale:
                self._publish_stale()

    def _failed(self, exc: Exception) -> PipelineStatus:
        self.failures += 1
        if self.failures == 1:
            self.recorder.event(self.name, "fault", f"detector failed: {exc}")
        logger.debug("detector failed: %s", exc)
        return PipelineStatus.FAILED

    def _collect(self, fut: cf.Future[_Result]) -> _Result | None:
        try:
            return fut.result(timeout=0)
        except Exception as exc:
            self._failed(exc)
            return None

    def _source_size(self, size: tuple[int, int]) -> None:
        set_size = getattr(self.source, "set_size", None)
        if callable(set_size):
            set_size(*size)

    # -- processing (worker thread) -------------------------------------------------------

    def _process(self, frame: FrameLike, detector: Detector,
                 resolution: tuple[int, int]) -> _Result:
        now = self.clock.now_ns
        s = self.settings
        t0 = now()
        img = frame.image
        fh, fw = img.shape[:2]
        rw, rh = resolution
        small = img if (fw, fh) == (rw, rh) else cv2.resize(
            img, (rw, rh), interpolation=cv2.INTER_AREA if rw < fw else cv2.INTER_LINEAR)
        t1 = now()
        if isinstance(detector, StagedDetector):
            prepared = detector.preprocess(small)
            t2 = now()
            k = frame.intrinsics
            if getattr(detector, "needs_depth", False) and frame.depth is not None and k is not None:
                # Metric-size classes: depth and focal length at the processing resolution.
                sd = frame.depth if (fw, fh) == (rw, rh) else cv2.resize(
                    frame.depth, (rw, rh), interpolation=cv2.INTER_NEAREST)
                focal = float(np.sqrt(k.fx * k.fy * (rw / fw) * (rh / fh)))
                raw = detector.infer(prepared, small.shape, depth=sd, focal_px=focal)
            else:
                raw = detector.infer(prepared, small.shape)
        else:
            t2 = t1
            raw = detector.detect(small)
        t3 = now()
        kept = filter_detections(raw, min_confidence=s.min_confidence,
                                 max_detections=s.max_detections, allow=s.allow)
        kept = scale_detections(kept, fw / rw, fh / rh)
        if frame.depth is not None and frame.intrinsics is not None:
            kept = locate(kept, frame.depth, frame.intrinsics)
        t4 = now()
        dets = Detections(
            items=tuple(kept), frame_seq=frame.seq, frame_stamp_ns=frame.stamp_ns,
            processing_s=(t4 - t0) / 1e9, frame_size=(fw, fh), resolution=(rw, rh),
            detector=detector.name, image=img if s.keep_image else None,
        )
        stages = {"resize": t1 - t0, "preprocess": t2 - t1, "detect": t3 - t2, "filter": t4 - t3}
        return _Result(dets, stages, t4)

    def process(self, frame: FrameLike) -> Detections:
        """Process one frame synchronously with the current knobs (no timeout, no recording).

        Raises ``FrameError`` for a frame of the wrong shape or dtype.
        """
        check_image(frame.image)
        if frame.depth is not None:
            check_depth(frame.depth, frame.image.shape)
        detector = self.detectors[self.knob("detector")]
        return self._process(frame, detector, tuple(self.knob("resolution"))).detections

    # -- publishing -----------------------------------------------------------------------

    def _publish(self, result: _Result, *, stale: bool = False) -> None:
        rec, name = self.recorder, self.name
        dets = result.detections.as_stale() if stale else result.detections
        for stage, ns in result.stages_ns.items():
            rec.observe(name, stage, ns / 1e9)
        self.channel.publish(dets)
        now = self.clock.now_ns()
        rec.observe(name, "frame_age", max(0, now - dets.frame_stamp_ns) / 1e9)
        rec.latency(name, dets.processing_s)
        rec.count(name)
        self.processed += 1
        self._last = dets
        rec.gauge(name, "stale_processed", self.stale_processed)
        rec.gauge(name, "skipped", self.skipped)

    def _publish_stale(self) -> None:
        assert self._last is not None
        self._last = self._last.as_stale()
        self.channel.publish(self._last)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(
            frames_seen=self.frames_seen, processed=self.processed, dropped=self.dropped,
            skipped=self.skipped, timeouts=self.timeouts, stale_processed=self.stale_processed,
            bad_frames=self.bad_frames, failures=self.failures, degraded=self.degraded,
            degraded_episodes=self.degraded_episodes,
        )
        if self._loop is not None:
            out["loop"] = self._loop.stats().as_dict()
        return out

