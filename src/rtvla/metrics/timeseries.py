"""``metrics.jsonl``: one line per interval with each component's windowed figures.

Usage::

    with MetricsLog(run_dir / "metrics.jsonl", recorder) as log:
        while running:
            log.write(extra={"adapt_level": optimizer.level})   # e.g. once a second
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO, Any

from rtvla.metrics.recorder import Recorder
from rtvla.metrics.report import json_safe

__all__ = ["MetricsLog", "read_metrics"]


class MetricsLog:
    """Appends interval snapshots of a recorder to a JSON-lines file (flushed per line)."""

    def __init__(self, path: str | Path, recorder: Recorder) -> None:
        self.path = Path(path)
        self.recorder = recorder
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> MetricsLog:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write one interval line (latency since the previous line) and return it."""
        rec = self.recorder
        t = (rec.clock.now_ns() - rec.started_ns) / 1e9
        comps = {}
        for name, row in rec.snapshot(interval=True).items():
            lat = row["latency_ms"]
            comps[name] = {
                "rate_hz": row["rate_hz"],
                "count": row["count"],
                "latency_ms": json_safe({k: lat[k] for k in ("p50", "p99", "max")}),
                "latency_count": lat["count"],
                "missed": row["missed"],
                "cpu_percent": row["cpu_percent"],
                "memory_mb": row["memory_mb"],
                "gauges": row["gauges"],
            }
        line = {"t": round(t, 4), "components": comps, **(extra or {})}
        with self._lock:
            if self._fh is not None:
                self._fh.write(json.dumps(line) + "\n")
                self._fh.flush()
        return line

    def swap_file(self, fh: IO[str]) -> None:
        """Write to ``fh`` from now on (the old file is closed): fault injection uses it to
        make the run folder unwritable mid-run."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
            self._fh = fh

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file; a truncated last line (a killed run) is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
