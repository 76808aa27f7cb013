"""``RunCapture``: what ``rtvla run`` records beside its report, failing soft and ending in time.

It holds the run's :class:`RunRecording` (``run.mcap``, optionally served live, and
``episode.mp4``) and, with ``--dataset``, a :class:`DatasetTap` that appends the run to a
LeRobot dataset. The main job drives it in four calls and never has to guard them: every
failure of the recording becomes an event (``record``/``failed``) in the run's metrics
``Recorder`` and so in the report, and :meth:`close` waits a bounded time whatever the
writers do (a writer still busy at the deadline is left behind, named in the result; the
file it was writing then lacks its index, which ``mcap recover`` restores).

A dataset that cannot be opened (an incompatible existing one) is the exception: the user
asked for it by name, so :meth:`attach` raises :class:`RecordError` and the run ends before
the task starts instead of running for nothing.

Usage (``runtime.main_job``)::

    capture = RunCapture(run_dir, settings, recorder=stack.recorder, dataset=options.dataset)
    stack.start()
    capture.attach(stack, instruction=task)          # starts the taps
    stack.on_progress = capture.wrap_progress(stack.on_progress)
    capture.log_plan(task, plan_result)
    ...
    capture.stop()                                   # in the finally, before stack.stop()
    stack.stop()
    report["recording"] = capture.close(control_final=stack.control_final, success=ok)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtvla.errors import RecordError
from rtvla.record.dataset_tap import DatasetTap
from rtvla.record.run import RunRecording
from rtvla.record.settings import RecordSettings

__all__ = ["RunCapture", "check_dataset_folder", "run_bounded"]

logger = logging.getLogger(__name__)

_DATASET_SAVE_TIMEOUT_S = 60.0  # saving appends the episode's video and rewrites parquet files


def run_bounded(fn: Callable[[], Any], timeout_s: float, *, name: str) -> tuple[bool, Any, BaseException | None]:
    """Call ``fn`` on a daemon thread and wait at most ``timeout_s``.

    Returns ``(finished, result, error)``. Ctrl-C while waiting stops the wait (``finished``
    False), not the caller: the run still has its report to write.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed back to the caller, which decides
            box["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        thread.join(timeout_s)
    except KeyboardInterrupt:
        logger.warning("%s: interrupted while waiting for it", name)
    if thread.is_alive():
        return False, None, None
    return True, box.get("result"), box.get("error")


def check_dataset_folder(path: str | Path) -> Path:
    """``path`` as a dataset to append to: missing, empty, or holding ``meta/info.json``.

    Raises :class:`RecordError` naming the folder otherwise (the run would mix its episode
    into unrelated files)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RecordError(f"dataset {p} is a file, not a folder")
    if p.is_dir() and not (p / "meta" / "info.json").is_file() and any(p.iterdir()):
        raise RecordError(f"dataset {p} is neither empty nor a LeRobot dataset (no meta/info.json in it)")
    return p


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


class RunCapture:
    """The run's recording and dataset episode, wired to a running stack. See the module docstring.

    Args:
        run_dir: the run folder (``run.mcap`` and ``episode.mp4`` go there).
        settings: the ``[record]`` table.
        recorder: the run's metrics ``Recorder`` (failures become its events).
        record: write ``run.mcap`` / ``episode.mp4`` (default: ``settings.enabled``).
        live / live_port: serve the record live to Foxglove (default: the settings').
        dataset: a LeRobot dataset folder to append the run to as one episode (None: no dataset).
        keep_failures: keep the dataset episode when the task fails too.
        dataset_fps: the dataset's frame rate.
        clock: ``() -> seconds`` for the recording's elapsed time (CPU share).
    """

    def __init__(self, run_dir: str | Path, settings: RecordSettings | None = None, *, recorder: Any,
                 record: bool | None = None, live: bool | None = None, live_port: int | None = None,
                 dataset: str | Path | None = None, keep_failures: bool = False, dataset_fps: int = 30,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = s = settings or RecordSettings()
        self.run_dir = Path(run_dir)
        self.recorder = recorder
        self.record_enabled = s.enabled if record is None else bool(record)
        self.live = s.live if live is None else bool(live)
        self.live_port_asked = s.live_port if live_port is None else int(live_port)
        if not 0 <= self.live_port_asked <= 65535:
            raise RecordError(f"live port must be in 0..65535, got {self.live_port_asked}")
        self.dataset_root = check_dataset_folder(dataset) if dataset is not None else None
        self.keep_failures = keep_failures
        self.dataset_fps = dataset_fps
        self.clock = clock
        self.recording: RunRecording | None = None
        self.dataset: DatasetTap | None = None
        self.errors: list[str] = []
        self._t0: float | None = None
        self._stopped = False
        self._record_stopped = False
        self._closed: dict[str, Any] | None = None

    # -- wiring -------------------------------------------------------------------------

    def _failed(self, what: str, exc: BaseException | str) -> None:
        msg = f"{what}: {exc if isinstance(exc, str) else f'{type(exc).__name__}: {exc}'}"
        self.errors.append(msg)
        logger.error("recording: %s", msg)
        if self.recorder is not None:
            self.recorder.event("record", "failed", msg)

    def attach(self, stack: Any, *, instruction: str = "", metadata: dict[str, str] | None = None) -> None:
        """Start recording ``stack`` (call after ``stack.start()``). A recording that cannot
        start is an event and the run goes on without it; a dataset that cannot be opened
        raises :class:`RecordError`."""
        self._t0 = self.clock()
        if self.dataset_root is not None:
            cam = stack.cameras[0]
            try:
                self.dataset = DatasetTap(self.dataset_root, instruction, camera=cam.source, robot=stack.robot,
                                          camera_name=cam.name, fps=self.dataset_fps,
                                          action_fn=_setpoint_source(stack), keep_failures=self.keep_failures)
            except RecordError:
                raise
            except Exception as exc:  # an unwritable folder, a corrupt parquet file
                raise RecordError(f"cannot open the dataset {self.dataset_root}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        if self.record_enabled:
            meta = {"task": instruction, "run_dir": str(self.run_dir), **(metadata or {})}
            try:
                self.recording = RunRecording.for_stack(stack, self.run_dir, self.settings, metadata=meta,
                                                        live=self.live, live_port=self.live_port_asked)
                self.recording.start()
                video = self.recording.video
                # Its renderers' GL contexts are made before the task moves the robot: making
                # one holds the interpreter long enough to starve the loops' setpoints.
                if video is not None and not video.wait_ready(5.0):
                    logger.warning("episode video: renderers not ready after 5 s; going on")
            except Exception as exc:
                rec, self.recording = self.recording, None
                self._failed("the run record could not start", exc)
                if rec is not None:
                    run_bounded(rec.close, self.settings.close_timeout_s, name="rtvla-record-close")
        if self.dataset is not None:
            self.dataset.start()

    @property
    def live_port(self) -> int | None:
        """The port the live view listens on (None without one)."""
        return self.recording.live_port if self.recording is not None else None

    @property
    def live_url(self) -> str | None:
        port = self.live_port
        return None if port is None else f"ws://{self.settings.live_host}:{port}"

    def wrap_progress(self, inner: Callable[[Any], None] | None) -> Callable[[Any], None]:
        """The executor's progress callback, with each step also logged to ``/plan/step``."""
        def on_progress(p: Any) -> None:
            if self.recording is not None and not self._record_stopped:
                try:
                    self.recording.record.log_step(p)
                except Exception as exc:  # the record must never stop the executor
                    logger.debug("recording a step failed: %s", exc)
            if inner is not None:
                inner(p)
        return on_progress

    def log_plan(self, instruction: str, result: Any) -> None:
        """A planning service ``PlanResult`` onto ``/plan``."""
        if self.recording is None or self._record_stopped:
            return
        try:
            self.recording.log_plan(instruction, result)
        except Exception as exc:
            logger.debug("recording the plan failed: %s", exc)

    def log_event(self, component: str, kind: str, message: str, *, level: str = "info") -> None:
        """A line on ``/log`` (a fault injected, the run ending)."""
        if self.recording is not None and not self._record_stopped:
            self.recording.record.log_event(component, kind, message, level=level)

    def folder_unwritable(self, err: int) -> None:
        """The run folder refuses writes (a full disk): nothing more goes into ``run.mcap``
        and ``episode.mp4`` (a dataset elsewhere goes on)."""
        if self._record_stopped or self.recording is None:
            return
        self._record_stopped = True
        if self.recorder is not None:
            self.recorder.event("record", "degraded", f"the run folder refuses writes (errno {err}): "
                                "run.mcap and episode.mp4 stop here")
        self._stop_part("record taps", self.recording)

    # -- ending ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading the stack (before the stack stops). Bounded, never raises, idempotent."""
        if self._stopped:
            return
        self._stopped = self._record_stopped = True
        self._stop_part("record taps", self.recording)
        self._stop_part("dataset sampling", self.dataset)

    def _stop_part(self, name: str, part: Any) -> None:
        if part is None:
            return
        done, _, err = run_bounded(part.stop, self.settings.close_timeout_s, name="rtvla-record-stop")
        if not done:
            self._failed(f"stopping the {name}", f"still busy after {self.settings.close_timeout_s:g} s")
        elif err is not None:
            self._failed(f"stopping the {name}", err)

    def close(self, *, control_final: dict[str, Any] | None = None, success: bool = False) -> dict[str, Any]:
        """Finish ``run.mcap``, ``episode.mp4`` and the dataset episode (kept when ``success``
        or ``keep_failures``); returns the report's ``recording`` section. Bounded in time:
        ``close_timeout_s`` for the record and video, a minute to save a dataset episode."""
        if self._closed is not None:
            return self._closed
        self.stop()
        t_close = self.clock()
        elapsed = max(1e-9, t_close - (self._t0 if self._t0 is not None else t_close))
        out: dict[str, Any] = {"enabled": self.record_enabled, "files": {}, "live": None, "dataset": None}
        cpu_s = 0.0
        if self.recording is not None:
            rec = self.recording
            if self.live:
                out["live"] = {"url": self.live_url, "port": self.live_port}
            timeout = self.settings.close_timeout_s
            done, stats, err = run_bounded(
                lambda: rec.close(control_final=control_final, timeout_s=timeout),
                timeout + 1.0, name="rtvla-record-close")
            if not done:
                self._failed("closing run.mcap / episode.mp4", f"not finished after {timeout + 1.0:g} s; "
                             "the file may lack its summary (mcap recover restores it)")
            elif err is not None:
                self._failed("closing run.mcap / episode.mp4", err)
            stats = stats or {}
            mcap, video = stats.get("mcap") or {}, stats.get("video") or {}
            if video.get("error"):
                self._failed("episode.mp4", str(video["error"]))
            for name in ("run.mcap", "episode.mp4"):
                size = _size(self.run_dir / name)
                if size is not None:
                    out["files"][name] = size
            cpu = {"taps_s": float(stats.get("taps_cpu_s") or 0.0),
                   "mcap_writer_s": float(mcap.get("writer_cpu_s") or 0.0),
                   "video_encode_s": float(video.get("encode_cpu_s") or 0.0),
                   "video_compose_s": float(video.get("compose_cpu_s") or 0.0)}
            cpu_s = sum(cpu.values())
            out.update(
                mcap={k: v for k, v in mcap.items() if k not in ("path",)},
                video={k: v for k, v in video.items() if k not in ("path",)} if video else None,
                messages=int(mcap.get("messages") or 0),
                dropped={"queue": int(mcap.get("dropped_queue") or 0), "size": int(mcap.get("dropped_size") or 0),
                         "video_frames": int(video.get("frames_dropped") or 0)},
                cpu=cpu,
            )
        if self.dataset is not None:
            tap = self.dataset
            keep = success or self.keep_failures
            timeout = _DATASET_SAVE_TIMEOUT_S if keep else self.settings.close_timeout_s
            done, info, err = run_bounded(lambda: tap.close(success=success), timeout, name="rtvla-dataset-close")
            if not done:
                self._failed("the dataset episode", f"not saved after {timeout:g} s")
                info = {"dataset": str(self.dataset_root), "kept": False}
            elif err is not None:
                self._failed("the dataset episode", err)
                info = {"dataset": str(self.dataset_root), "kept": False, "error": str(err)}
            out["dataset"] = info
            cpu_s += float((info or {}).get("cpu_s") or 0.0)
        out["cpu_s"] = cpu_s
        out["cpu_percent"] = 100.0 * cpu_s / elapsed
        out["recorded_s"] = elapsed if self._t0 is not None else 0.0
        out["close_s"] = self.clock() - t_close
        out["errors"] = list(self.errors)
        self._closed = out
        return out


def _setpoint_source(stack: Any) -> Callable[[], Any] | None:
    """The newest setpoint the stack sent its control loop, for the dataset's actions.

    In thread placement the setpoint channel is readable; in process placement it is the
    control process's shared-memory channel, read back here (the executor's side only
    writes). None when neither is there (the tap then records what the robot reports).
    """
    latest = getattr(stack.setpoints, "latest", None)
    if callable(latest) and not getattr(stack, "control_in_process", False):
        return latest
    control = getattr(stack, "control", None)
    channel = getattr(control, "setpoints", None)
    dof = getattr(control, "dof", None)
    if channel is None or dof is None or not callable(getattr(channel, "latest", None)):
        return None
    from rtvla.action.setpoints import Setpoint

    def read() -> Any:
        sample = channel.latest()
        return None if sample is None else Setpoint.from_array(sample.value, int(dof))
    return read
