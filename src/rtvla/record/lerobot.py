"""``LeRobotDatasetWriter``: episodes written as a LeRobot dataset, format v3.0, without lerobot.

The layout and columns follow lerobot's ``datasets/utils.py``, ``dataset_metadata.py``,
``dataset_writer.py``, ``compute_stats.py`` and ``video_utils.py`` (codebase v3.0)::

    meta/info.json                      codebase_version "v3.0", fps, features, totals, paths, splits
    meta/stats.json                     per feature: min, max, mean, std, count, q01 q10 q50 q90 q99
    meta/tasks.parquet                  task (index) -> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode (lengths, file indices,
                                        dataset_from/to_index, video from/to_timestamp, stats/...)
    data/chunk-000/file-000.parquet     one row per frame: observation.state, action, timestamp,
                                        frame_index, episode_index, index, task_index
    videos/observation.images.<camera>/chunk-000/file-000.mp4   all episodes, back to back

Each episode is encoded to its own temporary mp4 while it is recorded (so a discarded
episode costs nothing to drop); ``save_episode`` appends it and rewrites this session's
files, so the dataset on disk is complete after every saved episode. Opening an existing
dataset appends to it: like lerobot when it resumes, the new session writes the next
file index (``file-001``) and continues the episode and frame indices.

Usage::

    writer = LeRobotDatasetWriter("datasets/pick", fps=30, state_names=[...], action_names=[...],
                                  cameras={"head": (240, 320)}, robot_type="rtvla_sim")
    for step in episode:
        writer.add_frame(state, action, {"head": rgb}, task="put the red cube in the blue bin")
    writer.save_episode()            # or writer.discard_episode()
    writer.close()
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rtvla.errors import RecordError
from rtvla.record.video import VideoWriter

__all__ = ["CODEBASE_VERSION", "LeRobotDatasetWriter", "read_info"]

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE_PATTERN + ".parquet"
TASKS_PATH = "meta/tasks.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
_DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
_ARROW = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64()}


def read_info(root: str | Path) -> dict[str, Any]:
    """``meta/info.json`` of the dataset at ``root``."""
    p = Path(root) / "meta" / "info.json"
    if not p.is_file():
        raise RecordError(f"{root} is not a LeRobot dataset: no meta/info.json")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"{p} is not valid JSON: {exc}") from exc


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    """lerobot's ``update_chunk_file_indices``."""
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


def _vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """lerobot's ``get_feature_stats(axis=0)``: per-dimension stats of ``(N, D)`` or ``(N,)``."""
    v = np.asarray(values, dtype=np.float64)
    flat = v.reshape(len(v), -1)
    out = {"min": flat.min(0), "max": flat.max(0), "mean": flat.mean(0), "std": flat.std(0),
           "count": np.array([len(v)])}
    for q in QUANTILES:
        out[f"q{int(q * 100):02d}"] = np.quantile(flat, q, axis=0) if len(v) >= 2 else out["mean"].copy()
    return out


class _ImageStats:
    """Per-channel statistics of uint8 frames, normalised to [0, 1] like lerobot's, from a
    256-bin histogram per channel (exact quantiles for 8-bit data, constant memory)."""

    def __init__(self) -> None:
        self.hist = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def add(self, image: np.ndarray) -> None:
        # lerobot's auto_downsample_height_width: frames of 300 px and more are subsampled.
        h, w = image.shape[:2]
        if max(h, w) >= 300:
            k = int(w / 150) if w > h else int(h / 150)
            image = image[::k, ::k]
        for c in range(3):
            self.hist[c] += np.bincount(image[:, :, c].ravel(), minlength=256)
        self.frames += 1

    def stats(self) -> dict[str, np.ndarray]:
        levels = np.arange(256, dtype=np.float64)
        n = self.hist.sum(1).astype(np.float64)
        mean = (self.hist * levels).sum(1) / n
        var = (self.hist * levels**2).sum(1) / n - mean**2
        cum = np.cumsum(self.hist, axis=1)
        nz = self.hist > 0

        def shape(x: np.ndarray) -> np.ndarray:
            return (np.asarray(x, dtype=np.float64) / 255.0).reshape(3, 1, 1)

        out = {"min": shape(nz.argmax(1)), "max": shape(255 - nz[:, ::-1].argmax(1)),
               "mean": shape(mean), "std": shape(np.sqrt(np.maximum(var, 0.0))),
               "count": np.array([self.frames])}
        for q in QUANTILES:
            out[f"q{int(q * 100):02d}"] = shape([np.searchsorted(cum[c], q * n[c]) for c in range(3)])
        return out


def _aggregate(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """lerobot's ``aggregate_feature_stats``: count-weighted mean and pooled variance;
    quantiles as the envelope (min for q <= 50, max above)."""
    means = np.stack([s["mean"] for s in stats])
    counts = np.stack([s["count"] for s in stats]).astype(np.float64)
    w = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
    mean = (means * w).sum(0) / w.sum(0)
    var = ((np.stack([s["std"] ** 2 for s in stats]) + (means - mean) ** 2) * w).sum(0) / w.sum(0)
    total = counts.sum(0)
    out = {"min": np.min([s["min"] for s in stats], 0), "max": np.max([s["max"] for s in stats], 0),
           "mean": mean, "std": np.sqrt(var), "count": total.astype(np.int64)}
    for q in QUANTILES:
        key = f"q{int(q * 100):02d}"
        vals = np.stack([s[key] for s in stats])
        out[key] = vals.min(0) if q <= 0.5 else vals.max(0)
    return out


def _to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


def _hf_feature(ft: dict[str, Any]) -> dict[str, Any]:
    """The ``datasets`` feature JSON lerobot's parquet files carry (datasets 4: ``List``)."""
    value = {"dtype": ft["dtype"], "_type": "Value"}
    if list(ft["shape"]) == [1]:
        return value
    return {"feature": value, "length": int(ft["shape"][0]), "_type": "List"}


class LeRobotDatasetWriter:
    """Writes (or appends to) a LeRobot v3.0 dataset at ``root``. See the module docstring.

    Args:
        root: the dataset folder (created, or appended to when it holds ``meta/info.json``).
        fps: frames per second of the episodes (an integer, as lerobot requires).
        state_names / action_names: names of ``observation.state`` / ``action`` dimensions.
        cameras: ``name -> (height, width)``; each becomes ``observation.images.<name>``.
        robot_type: ``info.json``'s ``robot_type``.
        crf / gop: H.264 quality and keyframe interval (lerobot encodes with ``g=2`` so
            that training can seek to any frame cheaply).
    """

    def __init__(self, root: str | Path, *, fps: int, state_names: list[str], action_names: list[str],
                 cameras: dict[str, tuple[int, int]], robot_type: str | None = None,
                 crf: int = 30, gop: int = 2, chunks_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if int(fps) != fps or fps <= 0:
            raise RecordError(f"dataset fps must be a positive integer, got {fps}")
        self.root = Path(root)
        self.fps = int(fps)
        self.crf, self.gop = crf, gop
        self.cameras = dict(cameras)
        self.video_keys = [f"observation.images.{c}" for c in self.cameras]
        features: dict[str, Any] = {
            "observation.state": {"dtype": "float32", "shape": [len(state_names)], "names": list(state_names)},
            "action": {"dtype": "float32", "shape": [len(action_names)], "names": list(action_names)},
        }
        for cam, (h, w) in self.cameras.items():
            features[f"observation.images.{cam}"] = {"dtype": "video", "shape": [int(h), int(w), 3],
                                                     "names": ["height", "width", "channels"]}
        features.update(json.loads(json.dumps(_DEFAULT_FEATURES)))
        info_path = self.root / "meta" / "info.json"
        if info_path.is_file():
            self.info = read_info(self.root)
            self._check_compatible(features, robot_type)
            self.stats = {k: {s: np.asarray(v) for s, v in d.items()}
                          for k, d in json.loads((self.root / "meta" / "stats.json").read_text()).items()}
            table = pq.read_table(self.root / TASKS_PATH)
            self.tasks = dict(zip(table.column("task").to_pylist(), table.column("task_index").to_pylist(),
                                  strict=True))
            last = self._last_episode()
            self._chunk, self._file = _next_file(last["data/chunk_index"], last["data/file_index"],
                                                 self.info["chunks_size"])
            self._meta_chunk, self._meta_file = _next_file(
                last["meta/episodes/chunk_index"], last["meta/episodes/file_index"], self.info["chunks_size"])
            self._video_files = {k: _next_file(last[f"videos/{k}/chunk_index"], last[f"videos/{k}/file_index"],
                                               self.info["chunks_size"]) for k in self.video_keys}
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self.info = {
                "codebase_version": CODEBASE_VERSION, "fps": self.fps, "features": features,
                "total_episodes": 0, "total_frames": 0, "total_tasks": 0, "chunks_size": chunks_size,
                "data_files_size_in_mb": DEFAULT_DATA_FILE_SIZE_IN_MB,
                "video_files_size_in_mb": DEFAULT_VIDEO_FILE_SIZE_IN_MB,
                "data_path": DATA_PATH, "video_path": VIDEO_PATH if self.video_keys else None,
                "robot_type": robot_type, "splits": {},
            }
            self.stats = {}
            self.tasks = {}
            self._chunk = self._file = self._meta_chunk = self._meta_file = 0
            self._video_files = {k: (0, 0) for k in self.video_keys}
        self._tmp = Path(tempfile.mkdtemp(prefix=".rtvla-episodes-", dir=self.root))
        self._session_tables: list[pa.Table] = []
        self._session_rows: list[dict[str, Any]] = []
        self._session_videos: dict[str, list[Path]] = {k: [] for k in self.video_keys}
        self._session_frames: list[int] = []
        self._closed = False
        self._new_episode()

    # -- compatibility with an existing dataset -------------------------------------------

    def _check_compatible(self, features: dict[str, Any], robot_type: str | None) -> None:
        info = self.info
        if info.get("codebase_version") != CODEBASE_VERSION:
            raise RecordError(f"{self.root}: codebase_version {info.get('codebase_version')!r}, "
                              f"can only append to {CODEBASE_VERSION}")
        if info["fps"] != self.fps:
            raise RecordError(f"{self.root}: dataset fps is {info['fps']}, got fps={self.fps}")
        for key, ft in features.items():
            have = info["features"].get(key)
            if have is None or list(have["shape"]) != list(ft["shape"]) or have["dtype"] != ft["dtype"]:
                raise RecordError(f"{self.root}: feature {key!r} is {have}, this recording has {ft}")
        extra = set(info["features"]) - set(features)
        if extra:
            raise RecordError(f"{self.root}: the dataset has features {sorted(extra)} this recording lacks")

    def _last_episode(self) -> dict[str, Any]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise RecordError(f"{self.root}: meta/info.json exists but meta/episodes/ has no file")
        table = pq.read_table(files[-1])
        return {name: table.column(name)[-1].as_py() for name in table.column_names}

    # -- recording ------------------------------------------------------------------------

    def _new_episode(self) -> None:
        self._states: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._tasks: list[str] = []
        self._image_stats = {k: _ImageStats() for k in self.video_keys}
        n = self.info["total_episodes"] + len(self._session_rows)
        self._videos = {
            k: VideoWriter(self._tmp / f"{k}-{n:06d}.mp4", fps=self.fps, crf=self.crf, gop=self.gop,
                           block=True, queue_size=16)
            for k in self.video_keys
        }

    @property
    def frames(self) -> int:
        """Frames in the episode being recorded."""
        return len(self._states)

    def add_frame(self, state: np.ndarray, action: np.ndarray, images: dict[str, np.ndarray],
                  task: str) -> None:
        """One frame of the current episode (images keyed by camera name, HxWx3 uint8 RGB)."""
        if self._closed:
            raise RecordError("add_frame after close()")
        s = np.asarray(state, dtype=np.float32).reshape(-1)
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        for key, value in (("observation.state", s), ("action", a)):
            want = self.info["features"][key]["shape"][0]
            if value.shape != (want,):
                raise RecordError(f"{key} needs {want} values, got shape {value.shape}")
        if set(images) != set(self.cameras):
            raise RecordError(f"frame images {sorted(images)} do not match the cameras {sorted(self.cameras)}")
        for cam, img in images.items():
            h, w = self.cameras[cam]
            if img.shape != (h, w, 3) or img.dtype != np.uint8:
                raise RecordError(f"camera {cam!r} frame must be {h}x{w}x3 uint8, got {img.shape} {img.dtype}")
            key = f"observation.images.{cam}"
            self._image_stats[key].add(img)
            self._videos[key].write(img)
        self._states.append(s)
        self._actions.append(a)
        self._tasks.append(task)

    def discard_episode(self) -> None:
        """Drop the episode being recorded (a failed attempt)."""
        for v in self._videos.values():
            v.close()
            v.path.unlink(missing_ok=True)
        self._new_episode()

    def save_episode(self) -> dict[str, Any]:
        """Append the current episode to the dataset; returns its episode-metadata row."""
        n = len(self._states)
        if n == 0:
            raise RecordError("save_episode with no frames")
        for v in self._videos.values():
            stats = v.close()
            if stats["frames_written"] != n:
                raise RecordError(f"{v.path}: {stats['frames_written']} video frames for {n} rows")
        ep_index = self.info["total_episodes"] + len(self._session_rows)
        first = self.info["total_frames"] + sum(self._session_frames)
        for t in dict.fromkeys(self._tasks):
            if t not in self.tasks:
                self.tasks[t] = len(self.tasks)
        columns = {
            "observation.state": np.stack(self._states),
            "action": np.stack(self._actions),
            "timestamp": (np.arange(n) / self.fps).astype(np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, ep_index, dtype=np.int64),
            "index": np.arange(first, first + n, dtype=np.int64),
            "task_index": np.array([self.tasks[t] for t in self._tasks], dtype=np.int64),
        }
        ep_stats = {k: _vector_stats(v) for k, v in columns.items()}
        for key in self.video_keys:
            ep_stats[key] = self._image_stats[key].stats()
        self._session_tables.append(self._table(columns))
        offset_s = sum(self._session_frames) / self.fps
        row: dict[str, Any] = {"episode_index": ep_index, "tasks": list(dict.fromkeys(self._tasks)),
                               "length": n, "data/chunk_index": self._chunk, "data/file_index": self._file,
                               "dataset_from_index": first, "dataset_to_index": first + n}
        for key in self.video_keys:
            chunk, file = self._video_files[key]
            row.update({f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                        f"videos/{key}/from_timestamp": offset_s,
                        f"videos/{key}/to_timestamp": offset_s + n / self.fps})
            self._session_videos[key].append(self._videos[key].path)
        for feature, st in ep_stats.items():
            for name, value in st.items():
                row[f"stats/{feature}/{name}"] = np.asarray(value).tolist()
        row["meta/episodes/chunk_index"] = self._meta_chunk
        row["meta/episodes/file_index"] = self._meta_file
        self._session_rows.append(row)
        self._session_frames.append(n)
        self.stats = {k: _aggregate([self.stats[k], v]) if k in self.stats else v
                      for k, v in ep_stats.items()}
        self._write_session()
        self._new_episode()
        logger.info("dataset %s: episode %d saved (%d frames)", self.root, ep_index, n)
        return row

    # -- files ----------------------------------------------------------------------------

    def _table(self, columns: dict[str, np.ndarray]) -> pa.Table:
        arrays, fields = [], []
        for key, ft in self.info["features"].items():
            if ft["dtype"] == "video":
                continue
            typ = _ARROW[ft["dtype"]]
            v = columns[key]
            if list(ft["shape"]) == [1]:
                arrays.append(pa.array(v.reshape(-1), type=typ))
                fields.append(pa.field(key, typ))
            else:
                size = int(ft["shape"][0])
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), type=typ), size))
                fields.append(pa.field(key, pa.list_(typ, size)))
        hf = {"info": {"features": {k: _hf_feature(ft) for k, ft in self.info["features"].items()
                                    if ft["dtype"] != "video"}}}
        schema = pa.schema(fields, metadata={"huggingface": json.dumps(hf)})
        return pa.Table.from_arrays(arrays, schema=schema)

    def _write_parquet(self, table: pa.Table, rel: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, compression="snappy", use_dictionary=True)
        tmp.replace(path)

    def _write_videos(self) -> None:
        for key, parts in self._session_videos.items():
            chunk, file = self._video_files[key]
            out = self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".mp4.tmp")
            _concatenate(parts, tmp)
            tmp.replace(out)
            if "info" not in self.info["features"][key]:
                self.info["features"][key]["info"] = self._video_info(out)

    def _video_info(self, path: Path) -> dict[str, Any]:
        """lerobot's ``get_video_info`` with the encoder settings used here."""
        with av.open(str(path)) as f:
            s = f.streams.video[0]
            info: dict[str, Any] = {
                "video.height": s.height, "video.width": s.width, "video.codec": s.codec.canonical_name,
                "video.pix_fmt": s.pix_fmt, "video.fps": int(s.base_rate), "video.channels": 3,
                "has_audio": bool(f.streams.audio),
            }
        info.update({"video.g": self.gop, "video.crf": self.crf, "video.preset": "ultrafast",
                     "video.fast_decode": 0, "video.video_backend": "pyav", "video.extra_options": {},
                     "is_depth_map": False})
        return info

    def _write_session(self) -> None:
        self._write_parquet(pa.concat_tables(self._session_tables),
                            DATA_PATH.format(chunk_index=self._chunk, file_index=self._file))
        self._write_videos()
        keys = list(self._session_rows[0])
        self._write_parquet(pa.Table.from_pydict({k: [r[k] for r in self._session_rows] for k in keys}),
                            EPISODES_PATH.format(chunk_index=self._meta_chunk, file_index=self._meta_file))
        tasks = sorted(self.tasks.items(), key=lambda kv: kv[1])
        # pandas' to_parquet layout (lerobot's write_tasks): the index "task" after the
        # column, and the pandas metadata that makes read_parquet restore it as the index.
        pandas_meta = {
            "index_columns": ["task"], "column_indexes": [],
            "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                         "numpy_type": "int64", "metadata": None},
                        {"name": "task", "field_name": "task", "pandas_type": "unicode",
                         "numpy_type": "object", "metadata": None}],
            "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3",
        }
        schema = pa.schema([pa.field("task_index", pa.int64()), pa.field("task", pa.string())],
                           metadata={"pandas": json.dumps(pandas_meta)})
        self._write_parquet(pa.Table.from_arrays([pa.array([i for _, i in tasks], pa.int64()),
                                                  pa.array([t for t, _ in tasks], pa.string())],
                                                 schema=schema), TASKS_PATH)
        info = dict(self.info)
        info["total_episodes"] = self.info["total_episodes"] + len(self._session_rows)
        info["total_frames"] = self.info["total_frames"] + sum(self._session_frames)
        info["total_tasks"] = len(self.tasks)
        info["splits"] = {"train": f"0:{info['total_episodes']}"}
        _write_json(self.root / "meta" / "stats.json", _to_json(self.stats))
        _write_json(self.root / "meta" / "info.json", info)

    def close(self) -> dict[str, Any]:
        """Drop an unsaved episode, remove temporary files; returns ``meta/info.json``."""
        if not self._closed:
            self._closed = True
            for v in self._videos.values():
                v.close()
            shutil.rmtree(self._tmp, ignore_errors=True)
        return read_info(self.root) if (self.root / "meta" / "info.json").exists() else dict(self.info)

    def __enter__(self) -> LeRobotDatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _concatenate(parts: list[Path], out: Path) -> None:
    """Episodes' mp4 files back to back in one file, packets copied (no re-encoding),
    through FFmpeg's concat demuxer as lerobot's ``concatenate_video_files`` does."""
    listing = out.with_suffix(".ffconcat")
    listing.write_text("ffconcat version 1.0\n" + "".join(f"file '{p.resolve()}'\n" for p in parts))
    try:
        with av.open(str(listing), mode="r", format="concat", options={"safe": "0"}) as src, \
                av.open(str(out), mode="w", format="mp4", options={"movflags": "faststart"}) as dst:
            inp = src.streams.video[0]
            stream = dst.add_stream_from_template(template=inp, opaque=True)
            stream.time_base = inp.time_base
            for packet in src.demux(inp):
                if packet.dts is None:
                    continue
                packet.stream = stream
                dst.mux(packet)
    finally:
        listing.unlink(missing_ok=True)
