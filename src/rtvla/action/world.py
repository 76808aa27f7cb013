"""World state for the task executor: where objects are, from the newest fresh detections.

:class:`WorldModel` reads the perception pipeline's newest ``Detections`` from a
latest-value channel, drops them when stale (flagged stale by the pipeline, or a frame older
than ``max_age_s``), maps each detection's camera-frame 3D position into the world with the
camera's pose, and keeps one estimate per object name. There is no fallback: an object that
has not been seen fresh has no estimate, and a perceive step fails saying so.

:class:`GroundTruthPerception` answers the same questions from the simulator's true object
poses. It exists for lock-step tests of manipulation and is named so that nobody mistakes it
for perception.

Detections are read by shape (``items`` with ``label``, ``score``, ``position``;
``frame_stamp_ns``; ``stale``), so this module does not import ``rtvla.perception``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rtvla.timing import MONOTONIC, Clock

__all__ = ["GroundTruthPerception", "ObjectEstimate", "WorldModel", "WorldView", "labels_for_scene"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectEstimate:
    """Where an object was seen: world-frame centre, when (monotonic ns), how sure, by what."""

    name: str
    position: np.ndarray
    stamp_ns: int
    score: float
    source: str  # "detections" | "ground_truth"

    def age_s(self, now_ns: int) -> float:
        return (now_ns - self.stamp_ns) / 1e9


@runtime_checkable
class WorldView(Protocol):
    """What skills ask of the world: the newest estimate of a named object, if fresh enough."""

    def update(self) -> int:
        """Take in whatever is new; returns how many estimates changed."""
        ...

    def estimate(self, name: str, *, max_age_s: float | None = None) -> ObjectEstimate | None:
        ...


class WorldModel:
    """Object estimates from detections. See the module docstring.

    Args:
        detections: latest-value channel of ``Detections``.
        camera_pose: returns the camera-to-world 4x4 transform (OpenCV axes: x right,
            y down, z forward), e.g. ``SimCamera.camera_pose_world``; called with
            ``seq=frame_seq`` first, so a source that remembers per-frame poses gives the
            pose at capture time.
        labels: object name -> detector labels that mean it (default: the name itself).
        max_age_s: detections of frames older than this are ignored, estimates older than
            this are not returned (unless a caller asks for a different age).
        min_score: weaker detections are ignored.
    """

    def __init__(
        self,
        detections: Any,
        camera_pose: Callable[..., np.ndarray],
        *,
        labels: Mapping[str, Collection[str]] | None = None,
        max_age_s: float = 0.5,
        min_score: float = 0.3,
        clock: Clock = MONOTONIC,
    ) -> None:
        if not max_age_s > 0:
            raise ValueError(f"world.max_age_s must be > 0, got {max_age_s}")
        self.detections = detections
        self.camera_pose = camera_pose
        self.max_age_s = float(max_age_s)
        self.min_score = float(min_score)
        self.clock = clock
        self._label_to_name: dict[str, str] = {}
        for name, labs in (labels or {}).items():
            for lab in (name, *labs):
                self._label_to_name[lab] = name
        self._estimates: dict[str, ObjectEstimate] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self.ignored_stale = 0

    def name_of(self, label: str) -> str:
        return self._label_to_name.get(label, label)

    def update(self) -> int:
        sample = self.detections.latest()
        if sample is None or sample.seq == self._seq:
            return 0
        self._seq = sample.seq
        dets = sample.value
        now = self.clock.now_ns()
        stamp = int(getattr(dets, "frame_stamp_ns", sample.stamp_ns))
        if getattr(dets, "stale", False) or (now - stamp) / 1e9 > self.max_age_s:
            self.ignored_stale += 1
            return 0
        T = self._camera_pose(getattr(dets, "frame_seq", None))
        if T is None:
            self.ignored_stale += 1
            return 0
        changed = 0
        best: dict[str, tuple[float, np.ndarray]] = {}
        for d in getattr(dets, "items", ()):
            if d.position is None or d.score < self.min_score:
                continue
            name = self.name_of(d.label)
            p = T[:3, :3] @ np.asarray(d.position, dtype=float) + T[:3, 3]
            if name not in best or d.score > best[name][0]:
                best[name] = (float(d.score), p)
        with self._lock:
            for name, (score, p) in best.items():
                self._estimates[name] = ObjectEstimate(name, p, stamp, score, "detections")
                changed += 1
        return changed

    def _camera_pose(self, seq: int | None) -> np.ndarray | None:
        """The camera pose when frame ``seq`` was taken if the source keeps it (SimCamera
        does), else its current pose (fine while the robot stands still to perceive)."""
        if seq is not None:
            try:
                return np.asarray(self.camera_pose(seq=seq), dtype=float)  # type: ignore[call-arg]
            except TypeError:
                pass  # a pose source without per-frame history
            except KeyError:
                return None  # the frame is too old for the pose history: do not guess
        return np.asarray(self.camera_pose(), dtype=float)

    def estimate(self, name: str, *, max_age_s: float | None = None) -> ObjectEstimate | None:
        age = self.max_age_s if max_age_s is None else max_age_s
        with self._lock:
            est = self._estimates.get(name)
        if est is None or est.age_s(self.clock.now_ns()) > age:
            return None
        return est

    def observations(self, *, max_age_s: float = 30.0) -> list[dict[str, Any]]:
        """Every estimate seen within ``max_age_s``, newest first, as plain data (a planner's
        context): label, world position and age."""
        now = self.clock.now_ns()
        with self._lock:
            ests = list(self._estimates.values())
        out = [{"label": e.name, "position": [round(float(v), 3) for v in e.position],
                "age_s": round(e.age_s(now), 2), "score": round(e.score, 2)}
               for e in ests if e.age_s(now) <= max_age_s]
        return sorted(out, key=lambda o: o["age_s"])

    def forget(self, name: str) -> None:
        """Drop the estimate of ``name`` (it was moved: the old position is wrong)."""
        with self._lock:
            self._estimates.pop(name, None)


def labels_for_scene(scene: Any) -> dict[str, list[str]]:
    """Detector labels for each object of a scene config (``objects`` with a ``color``): the
    object's own name, plus its colour when no other object shares that colour (the color
    detector labels blobs by colour). Receptacles are left to their own names."""
    objects = getattr(scene, "objects", {})
    colors: dict[str, list[str]] = {}
    for name, spec in objects.items():
        colors.setdefault(getattr(spec, "color", ""), []).append(name)
    return {
        name: [spec.color] if len(colors.get(getattr(spec, "color", ""), [])) == 1 and spec.color else []
        for name, spec in objects.items()
    }


class GroundTruthPerception:
    """Object positions straight from the simulator (``object_position(name)``): a stand-in
    for perception in lock-step manipulation tests, never for real runs."""

    def __init__(self, sim: Any, *, clock: Clock = MONOTONIC, names: Collection[str] | None = None) -> None:
        self.sim = sim
        self.clock = clock
        self.names = set(names) if names is not None else set(getattr(sim, "object_names", list)())

    def update(self) -> int:
        return 0

    def estimate(self, name: str, *, max_age_s: float | None = None) -> ObjectEstimate | None:
        if name not in self.names:
            return None
        p = np.asarray(self.sim.object_position(name), dtype=float)
        return ObjectEstimate(name, p, self.clock.now_ns(), 1.0, "ground_truth")
