"""``rtvla bench perception``: the rtvla pipeline against the reference chapter's design.

Both consume the same kind of source: a synthetic 640x480 camera paced at 30 fps (colored
shapes over a textured background; no camera needed). Both run the same detector and the
same resize/filter work per frame. They differ only in how frames reach the detector:

* ``rtvla``: :class:`~rtvla.perception.pipeline.VisionPipeline`: a 30 Hz rate loop that
  always takes the newest frame; frames that arrived in between are dropped and counted.
* ``reference``: the chapter's ``OptimizedVisionSystem``: the camera appends every frame to
  a ``deque(maxlen=5)``; a processing thread takes frames from it in order, submits each to
  a thread pool and blocks on ``future.result(timeout=1.0)``, then polls again after 1 ms.

Each row: ``{"pipeline", "detector", "fps", "frame_age_ms": {"p50", "p99"}, "dropped",
"stale_processed"}``; ``stale_processed`` counts frames whose processing started while a
newer frame was already waiting. Goals: 30 Hz at 640x480 on one core with the default
detector, frame age p99 <= 2 frame periods, ``stale_processed`` = 0.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2

from rtvla.metrics import LatencyHistogram, Recorder
from rtvla.perception.color import ColorDetector
from rtvla.perception.detections import (
    Detector,
    StagedDetector,
    filter_detections,
    scale_detections,
)
from rtvla.perception.frames import Frame
from rtvla.perception.pipeline import PipelineSettings, VisionPipeline
from rtvla.perception.synthetic import SyntheticSource
from rtvla.timing import MONOTONIC, Clock

__all__ = [
    "BENCH_MODEL_STEM",
    "ReferenceVisionSystem",
    "build_bench_model",
    "make_detector",
    "plot_rows",
    "run_perception_bench",
]

logger = logging.getLogger(__name__)

#: Conv stem of the bench's ONNX test model: about 50 ms per 640x640 frame on one core of a
#: 2.5 GHz Xeon, the order of a small real YOLO on a CPU core (and slower than the camera's
#: 33 ms period, so this row shows how each design behaves when detection cannot keep up).
#: ``--onnx-stem 16,32,64`` gives a ~10 ms model instead.
BENCH_MODEL_STEM = (48, 96, 192)
WIDTH, HEIGHT, FPS = 640, 480, 30.0


class ReferenceVisionSystem:
    """The reference chapter's ``OptimizedVisionSystem`` made runnable, kept faithful.

    ``get_latest_frame`` takes the oldest buffered frame (the deque is the chapter's frame
    buffer, filled by the camera callback); ``process_frame_optimized`` resizes, runs the
    detector and filters (confidence > 0.5, at most 10), as the chapter does.
    """

    def __init__(self, source: SyntheticSource, detector: Detector, *,
                 input_resolution: tuple[int, int] = (WIDTH, HEIGHT), skip_frames: int = 1,
                 clock: Clock = MONOTONIC) -> None:
        self.source = source
        self.detector = detector
        self.input_resolution = input_resolution
        self.skip_frames = skip_frames
        self.clock = clock
        self.frame_buffer: deque[Frame] = deque(maxlen=5)
        self.executor = cf.ThreadPoolExecutor(max_workers=2)
        self.frame_counter = 0
        self.processed = 0
        self.stale_processed = 0
        self.taken = 0
        self.errors = 0
        self.frame_age = LatencyHistogram()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first_seq: int | None = None
        source.subscribe(self._on_frame)

    def _on_frame(self, frame: Frame) -> None:
        if self._first_seq is None:
            self._first_seq = frame.seq
        self.frame_buffer.append(frame)

    def get_latest_frame(self) -> Frame | None:
        try:
            return self.frame_buffer.popleft()
        except IndexError:
            return None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.processing_loop, name="reference-vision",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.executor.shutdown(wait=True)

    def processing_loop(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.get_latest_frame()
                if frame is not None:
                    self.taken += 1
                    self.frame_counter += 1
                    if self.frame_counter % self.skip_frames == 0:
                        if self.frame_buffer:  # a newer frame is already waiting
                            self.stale_processed += 1
                        future = self.executor.submit(self.process_frame_optimized, frame)
                        results = future.result(timeout=1.0)
                        self.publish(frame, results)
            except Exception as exc:  # the chapter logs and continues
                self.errors += 1
                logger.debug("reference vision processing error: %s", exc)
                continue
            self._stop.wait(0.001)  # the chapter's 1 ms poll

    def process_frame_optimized(self, frame: Frame) -> dict[str, Any]:
        t0 = self.clock.now_ns()
        w, h = self.input_resolution
        img = frame.image
        resized = img if img.shape[1::-1] == (w, h) else cv2.resize(img, (w, h))
        if isinstance(self.detector, StagedDetector):
            raw = self.detector.infer(self.detector.preprocess(resized), resized.shape)
        else:
            raw = self.detector.detect(resized)
        dets = filter_detections(raw, min_confidence=0.5, max_detections=10)
        dets = scale_detections(dets, img.shape[1] / w, img.shape[0] / h)
        return {"detections": dets, "processing_time": (self.clock.now_ns() - t0) / 1e9}

    def publish(self, frame: Frame, results: dict[str, Any]) -> None:
        self.processed += 1
        self.frame_age.record(max(0, self.clock.now_ns() - frame.stamp_ns) / 1e9)

    def dropped(self) -> int:
        """Frames produced that never reached processing (evicted from the deque)."""
        if self._first_seq is None:
            return 0
        produced = self.source.latest_seq - self._first_seq + 1
        return max(0, produced - self.taken - len(self.frame_buffer))


def build_bench_model(directory: str | Path, stem: Sequence[int] = BENCH_MODEL_STEM) -> Path:
    """The bench's ONNX model (YOLOv8 layout, 3 classes, conv stem), built offline."""
    from rtvla.perception.testing_models import Candidate, build_yolo_model

    return build_yolo_model(
        Path(directory) / "rtvla_bench_yolo.onnx", input_size=(640, 640), num_classes=3,
        candidates=[Candidate(320, 320, 60, 60, 0, 0.9), Candidate(200, 300, 50, 40, 2, 0.8)],
        stem=tuple(stem), class_names=["red", "green", "blue"],
    )


def make_detector(kind: str, workdir: Path, onnx_stem: Sequence[int] = BENCH_MODEL_STEM
                  ) -> Detector:
    if kind == "color":
        return ColorDetector()
    if kind == "onnx":
        from rtvla.perception.onnx_detector import OnnxDetector

        return OnnxDetector(build_bench_model(workdir, onnx_stem), threads=1)
    raise ValueError(f"bench detector must be 'color' or 'onnx', got {kind!r}")


def _run_rtvla(detector: Detector, seconds: float, clock: Clock) -> dict[str, Any]:
    rec = Recorder(clock=clock)
    src = SyntheticSource(WIDTH, HEIGHT, FPS, clock=clock)
    pipe = VisionPipeline(src, detector, recorder=rec, rate_hz=FPS, clock=clock,
                          settings=PipelineSettings(resolutions=((WIDTH, HEIGHT),),
                                                    detect_timeout_s=1.0))
    stats = pipe.run(duration_s=seconds)
    age = rec.snapshot()["perception"]["observed_ms"].get("frame_age", {})
    elapsed = stats.elapsed_s or seconds
    return {
        "pipeline": "rtvla", "detector": detector.name,
        "fps": pipe.processed / elapsed if elapsed else 0.0,
        "frame_age_ms": {"p50": age.get("p50"), "p99": age.get("p99")},
        "dropped": pipe.dropped, "stale_processed": pipe.stale_processed,
    }


def _run_reference(detector: Detector, seconds: float, clock: Clock) -> dict[str, Any]:
    src = SyntheticSource(WIDTH, HEIGHT, FPS, clock=clock)
    ref = ReferenceVisionSystem(src, detector, clock=clock)
    src.open()
    ref.start()
    t0 = clock.now_ns()
    stop = threading.Event()
    stop.wait(seconds)
    ref.stop()
    elapsed = (clock.now_ns() - t0) / 1e9
    src.close()
    age = ref.frame_age.summary_ms()
    return {
        "pipeline": "reference", "detector": detector.name,
        "fps": ref.processed / elapsed if elapsed else 0.0,
        "frame_age_ms": {"p50": age["p50"], "p99": age["p99"]},
        "dropped": ref.dropped(), "stale_processed": ref.stale_processed,
    }


def run_perception_bench(
    seconds: float = 4.0,
    *,
    detectors: Sequence[str] = ("color", "onnx"),
    onnx_stem: Sequence[int] = BENCH_MODEL_STEM,
    clock: Clock = MONOTONIC,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[str, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run each detector through both pipelines for ``seconds``; return the JSON rows."""
    if not seconds > 0:
        raise ValueError(f"bench seconds must be > 0, got {seconds}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rtvla-bench-") as tmp:
        for kind in detectors:
            det = make_detector(kind, Path(tmp), onnx_stem)
            warm = SyntheticSource(WIDTH, HEIGHT, FPS).render(0.0, 1, 0)
            det.detect(warm.image)  # load/warm up outside the timed runs
            for name, fn in (("rtvla", _run_rtvla), ("reference", _run_reference)):
                if on_start is not None:
                    on_start(name, kind)
                row = fn(det, seconds, clock)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


def plot_rows(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Bar charts of fps and frame age p50/p99 per pipeline and detector (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['pipeline']}\n{r['detector']}" for r in rows]
    xs = range(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    colors = ["tab:green" if r["pipeline"] == "rtvla" else "tab:gray" for r in rows]
    ax1.bar(xs, [r["fps"] for r in rows], color=colors)
    ax1.axhline(FPS, ls="--", c="k", lw=1, label="camera 30 fps")
    ax1.set_xticks(list(xs), labels)
    ax1.set_ylabel("processed frames / s")
    ax1.legend()
    p50 = [r["frame_age_ms"]["p50"] or 0 for r in rows]
    p99 = [r["frame_age_ms"]["p99"] or 0 for r in rows]
    ax2.bar([x - 0.2 for x in xs], p50, 0.4, label="p50", color="tab:blue")
    ax2.bar([x + 0.2 for x in xs], p99, 0.4, label="p99", color="tab:orange")
    ax2.axhline(2000 / FPS, ls="--", c="k", lw=1, label="2 frame periods")
    ax2.set_xticks(list(xs), labels)
    ax2.set_ylabel("frame age at publish (ms)")
    ax2.legend()
    fig.suptitle("rtvla bench perception: 640x480 @ 30 fps synthetic camera")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
