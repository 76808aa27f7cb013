from __future__ import annotations

import threading

import numpy as np
import pytest

from rtvla.channels import LatestValue
from rtvla.errors import ConfigError, FrameError
from rtvla.metrics import Recorder
from rtvla.perception import (
    ColorDetector,
    Detection,
    FrameSource,
    Intrinsics,
    PipelineSettings,
    PipelineStatus,
    SyntheticSource,
    VisionPipeline,
)
from rtvla.timing import FakeClock

from .conftest import ScriptedSource, SimLikeFrame, scene

MS = 1_000_000


def make(source, clock, **settings):
    rec = Recorder(clock=clock)
    pipe = VisionPipeline(source, ColorDetector(), recorder=rec, clock=clock,
                          settings=PipelineSettings(detect_timeout_s=None, **settings))
    pipe.setup()
    return pipe, rec


def test_latest_frame_semantics_counts_drops(scripted):
    clock = FakeClock()
    pipe, rec = make(scripted, clock)
    img = scene()
    scripted.put(img, seq=1)
    assert pipe.step() is PipelineStatus.PUBLISHED
    assert pipe.step() is PipelineStatus.NO_FRAME  # same frame again: nothing to do
    scripted.put(img, seq=5, stamp_ns=clock.now_ns())  # 2, 3, 4 arrived while busy
    clock.advance(0.004)
    assert pipe.step() is PipelineStatus.PUBLISHED
    assert (pipe.processed, pipe.dropped, pipe.frames_seen) == (2, 3, 2)
    sample = pipe.channel.latest()
    assert sample.value.frame_seq == 5 and not sample.value.stale
    assert sorted(sample.value.labels()) == ["blue", "green", "red"]
    observed = rec.snapshot()["perception"]["observed_ms"]
    assert {"grab", "resize", "preprocess", "detect", "filter", "frame_age"} <= set(observed)
    assert observed["frame_age"]["max"] == pytest.approx(4.0, rel=0.05)
    assert rec.snapshot()["perception"]["gauges"]["dropped"] == 3


def test_skip_frames_knob(scripted):
    pipe, _ = make(scripted, FakeClock())
    pipe.knobs["skip_frames"].set_value(2)
    statuses = []
    for seq in range(1, 7):
        scripted.put(scene(), seq=seq)
        statuses.append(pipe.step())
    assert statuses.count(PipelineStatus.PUBLISHED) == 3
    assert pipe.skipped == 3 and pipe.dropped == 0


def test_resolution_knob_maps_boxes_back(scripted):
    pipe, _ = make(scripted, FakeClock(), resolutions=((640, 480), (320, 240)))
    pipe.knobs["resolution"].set_index(1)
    scripted.put(scene(), seq=1)
    pipe.step()
    dets = pipe.channel.latest().value
    assert dets.resolution == (320, 240) and dets.frame_size == (640, 480)
    boxes = {d.label: d.box for d in dets}
    assert boxes["red"] == pytest.approx((100, 100, 160, 160), abs=2.5)
    assert boxes["blue"] == pytest.approx((480, 320, 560, 400), abs=2.5)


def test_allow_list_and_3d_positions(scripted):
    pipe, _ = make(scripted, FakeClock(), allow=frozenset({"red"}))
    depth = np.full((480, 640), 2.0, np.float32)
    k = Intrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)
    scripted.put(scene(), seq=1, depth=depth, intrinsics=k)
    pipe.step()
    (red,) = pipe.channel.latest().value.items
    assert red.position == pytest.approx(((130 - 320) * 2 / 500, (130 - 240) * 2 / 500, 2.0))


def test_sim_camera_shaped_source_is_accepted():
    class SimLikeCamera:
        def __init__(self):
            self.frame = SimLikeFrame(scene(), 0, 1, np.ones((480, 640), np.float32),
                                      Intrinsics(400.0, 400.0, 319.5, 239.5, 640, 480))

        def open(self): ...
        def close(self): ...
        def read(self):
            return self.frame

        def camera_pose_world(self):
            return np.eye(4)

    cam = SimLikeCamera()
    assert isinstance(cam, FrameSource)
    pipe, _ = make(cam, FakeClock())
    assert pipe.step() is PipelineStatus.PUBLISHED
    assert all(d.position is not None for d in pipe.channel.latest().value)


def test_bad_frame_is_reported_not_raised_in_the_loop(scripted):
    pipe, rec = make(scripted, FakeClock())
    scripted.put(np.zeros((480, 640), np.uint8), seq=1)
    assert pipe.step() is PipelineStatus.BAD_FRAME
    assert pipe.bad_frames == 1
    assert [e.kind for e in rec.events] == ["bad_frame"]
    with pytest.raises(FrameError, match="HxWx3"):
        pipe.process(scripted.frame)


def test_source_drop_marks_degraded_then_recovered(scripted):
    clock = FakeClock()
    pipe, rec = make(scripted, clock, source_timeout_s=0.5)
    scripted.put(scene(), seq=1)
    pipe.step()
    for _ in range(10):
        clock.advance(0.1)
        pipe.step()
    assert pipe.degraded
    assert pipe.channel.latest().value.stale  # the last result re-published as stale
    scripted.put(scene(), seq=2)
    clock.advance(0.1)
    assert pipe.step() is PipelineStatus.PUBLISHED
    assert not pipe.degraded
    kinds = [(e.kind, e.detail) for e in rec.events]
    assert kinds[0][0] == "degraded" and kinds[1][0] == "recovered"
    assert kinds[1][1]["outage_s"] == pytest.approx(1.1, abs=0.01)
    assert pipe.degraded_episodes == 1


class GatedDetector:
    """Blocks in detect() until released: a detection that overruns its timeout."""

    name = "gated"

    def __init__(self):
        self.gate = threading.Event()
        self.entered = threading.Event()

    def detect(self, image):
        self.entered.set()
        self.gate.wait(10)
        return [Detection((1, 1, 5, 5), "thing", 0.9)]


def test_detection_timeout_publishes_stale_instead_of_blocking(scripted):
    fast, slow = ColorDetector(), GatedDetector()
    chan = LatestValue("dets")
    pipe = VisionPipeline(scripted, [fast, slow], channel=chan,
                          settings=PipelineSettings(detect_timeout_s=0.05))
    pipe.setup()
    try:
        scripted.put(scene(), seq=1)
        assert pipe.step() is PipelineStatus.PUBLISHED
        pipe.knobs["detector"].set_value("gated")
        scripted.put(scene(), seq=2)
        assert pipe.step() is PipelineStatus.TIMEOUT
        latest = chan.latest().value
        assert latest.stale and latest.frame_seq == 1 and latest.detector == "color"
        scripted.put(scene(), seq=3)
        assert pipe.step() is PipelineStatus.BUSY  # frame 3 is dropped, not queued
        assert pipe.dropped == 1
        slow.gate.set()
        done = threading.Event()
        for _ in range(500):
            if not pipe.busy:
                break
            done.wait(0.01)
        assert not pipe.busy
        seen = chan.seq
        scripted.put(scene(), seq=4)
        pipe.knobs["detector"].set_value("color")
        assert pipe.step() is PipelineStatus.PUBLISHED
        values = chan.latest().value
        assert values.frame_seq == 4 and chan.seq == seen + 2  # late result, then frame 4
        assert pipe.timeouts == 1
    finally:
        slow.gate.set()
        pipe.teardown()


def test_settings_validation():
    with pytest.raises(ConfigError, match="min_confidence"):
        PipelineSettings(min_confidence=2)
    with pytest.raises(ConfigError, match="resolutions"):
        PipelineSettings(resolutions=((10, 10),))
    with pytest.raises(ConfigError, match="at least one detector"):
        VisionPipeline(ScriptedSource(), [])


def test_realtime_run_keeps_up_with_a_30fps_camera():
    rec = Recorder()
    pipe = VisionPipeline(SyntheticSource(320, 240, 30.0), ColorDetector(), recorder=rec,
                          settings=PipelineSettings(resolutions=((320, 240),)))
    stats = pipe.run(duration_s=1.5)
    assert stats.ticks >= 35
    assert pipe.processed >= 30
    assert pipe.stale_processed == 0
    age = rec.snapshot()["perception"]["observed_ms"]["frame_age"]
    assert age["p50"] < 100  # generous: a loaded 2-core machine
    assert pipe.channel.latest().value.frame_size == (320, 240)


def test_opencv_source_dropping_mid_run_degrades_and_recovers():
    from rtvla.perception import OpenCVSource

    from .test_sources import FlakyCapture

    back = threading.Event()
    made = []

    def factory(target):
        made.append(target)
        if len(made) == 1:
            return FlakyCapture(10)  # ten frames, then the camera "unplugs"
        return FlakyCapture(100000) if back.is_set() else FlakyCapture(0, opened=False)

    rec = Recorder()
    src = OpenCVSource(0, backoff_s=(0.02, 0.05), capture_factory=factory)
    pipe = VisionPipeline(src, ColorDetector(), recorder=rec,
                          settings=PipelineSettings(resolutions=((16, 16),),
                                                    source_timeout_s=0.15))
    worker = threading.Thread(target=pipe.run, kwargs={"duration_s": 8.0}, daemon=True)
    worker.start()
    ev = threading.Event()
    try:
        for _ in range(400):
            if pipe.degraded:
                break
            ev.wait(0.01)
        assert pipe.degraded
        back.set()
        for _ in range(400):
            if any(e.kind == "recovered" for e in rec.events):
                break
            ev.wait(0.01)
        kinds = [e.kind for e in rec.events]
        assert kinds[:2] == ["degraded", "recovered"]
        assert src.reconnects == 1
    finally:
        pipe.stop()
        worker.join(5)
    assert not worker.is_alive()


def test_the_resolution_knob_reaches_a_source_that_can_change_its_size():
    class Sizable(SyntheticSource):
        sizes: list = []

        def set_size(self, w, h):
            self.sizes.append((w, h))

    src = Sizable(64, 48)
    pipe = VisionPipeline(src, [ColorDetector()], settings=PipelineSettings(resolutions=((64, 48), (32, 24))))
    pipe.knobs["resolution"].set_index(1)
    pipe.knobs["resolution"].set_index(0)
    assert src.sizes == [(32, 24), (64, 48)]
    # A source without set_size is simply resized after capture, as before.
    plain = VisionPipeline(SyntheticSource(64, 48), [ColorDetector()],
                           settings=PipelineSettings(resolutions=((64, 48), (32, 24))))
    plain.knobs["resolution"].set_index(1)
