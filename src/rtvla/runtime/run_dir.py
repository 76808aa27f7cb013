"""The run folder: ``report.json``, ``metrics.jsonl``, PNG plots, ``run.log`` (and the
recording, ``run.mcap`` and ``episode.mp4``, which ``rtvla.record`` writes).

Usage::

    with RunDir.create("runs", label="put the red cube in the blue bin") as rd:
        ...                                  # logging also goes to rd.path / "run.log"
        rd.write_report(report)              # atomically; safe to call again on shutdown
        rd.write_plots()
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtvla.errors import RuntimeStackError
from rtvla.metrics.report import json_safe

__all__ = ["RunDir", "load_run"]

logger = logging.getLogger(__name__)

_SECRET_KEYS = re.compile(r"(api[_-]?key|token|secret|password|authorization)", re.I)


class RunDir:
    """A run's output folder, with a log handler attached while it is open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handler: logging.Handler | None = None
        self._refused: int | None = None  # an errno every write fails with (fault injection)
        #: called with the errno when writes start failing (the run's recording stops then)
        self.on_refuse: list[Callable[[int], None]] = []

    @classmethod
    def create(cls, root: str | Path = "runs", *, label: str = "run", path: str | Path | None = None) -> RunDir:
        """Make ``root/<UTC time>-<label slug>`` (or exactly ``path`` when given)."""
        if path is None:
            slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "run"
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            p = Path(root) / f"{stamp}-{slug}"
            n = 1
            while p.exists():
                n += 1
                p = Path(root) / f"{stamp}-{slug}-{n}"
        else:
            p = Path(path)
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeStackError(f"cannot create run folder {p}: {exc}") from exc
        return cls(p)

    def __enter__(self) -> RunDir:
        self.attach_log()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach_log()

    def attach_log(self, level: int = logging.INFO) -> None:
        handler = logging.FileHandler(self.path / "run.log", encoding="utf-8")
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
        root = logging.getLogger("rtvla")
        root.addHandler(handler)
        if root.level == logging.NOTSET or root.level > level:
            root.setLevel(level)
        self._handler = handler

    def detach_log(self) -> None:
        if self._handler is not None:
            logging.getLogger("rtvla").removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def report_path(self) -> Path:
        return self.path / "report.json"

    @property
    def mcap_path(self) -> Path:
        return self.path / "run.mcap"

    @property
    def video_path(self) -> Path:
        return self.path / "episode.mp4"

    def refuse_writes(self, err: int) -> None:
        """From now on every write here fails with ``err`` (``--inject disk-full``); the log
        handler is detached so the logging module does not print a traceback per line."""
        self._refused = err
        self.detach_log()
        for listener in list(self.on_refuse):
            try:
                listener(err)
            except Exception:  # a listener must not stop the fault from taking effect
                logger.exception("run folder: a refuse-writes listener failed")

    def _check_writable(self) -> None:
        if self._refused is not None:
            raise OSError(self._refused, f"{os.strerror(self._refused)} (injected): {self.path}")

    def write_report(self, report: dict[str, Any]) -> Path:
        """Write report.json atomically (a crash mid-write never leaves half a file)."""
        self._check_writable()
        tmp = self.report_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(json_safe(report, redact=_SECRET_KEYS), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.report_path)
        return self.report_path

    def write_plots(self, report: dict[str, Any] | None = None) -> list[Path]:
        from rtvla.metrics import read_metrics
        from rtvla.metrics.plots import plot_run

        self._check_writable()
        report = report if report is not None else load_run(self.path)
        rows = read_metrics(self.metrics_path) if self.metrics_path.exists() else []
        return plot_run(rows, report, self.path)


def load_run(path: str | Path) -> dict[str, Any]:
    """Read a finished run's report.json, with a clear error when it is not a run folder."""
    p = Path(path)
    f = p / "report.json" if p.is_dir() else p
    if not f.is_file():
        raise RuntimeStackError(f"{p} is not a run folder: no report.json in it")
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RuntimeStackError(f"{f} is not valid JSON: {exc}") from exc
