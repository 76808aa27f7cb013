"""Constant-memory latency histogram with ~1 % accurate percentiles and O(1) recording.

Buckets are log-spaced with a 2 % ratio between edges; a percentile is reported as the
bucket's geometric midpoint, clamped to the observed min/max, so its relative error is at
most about 1 %. Memory is fixed (about 1,300 integer counters for 100 ns .. 1000 s)
whatever the number of samples, unlike a list that grows with every sample.
The counters are a numpy array so batches fold in with one ``bincount``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["LatencyHistogram"]

_RATIO = 1.02
_LOG_RATIO = math.log(_RATIO)


class LatencyHistogram:
    """Histogram of durations in seconds between ``lowest_s`` and ``highest_s``.

    Values below ``lowest_s`` fall in the first bucket, above ``highest_s`` in the last; the
    exact min, max, sum and count are kept beside the buckets. Not thread-safe by itself:
    the :class:`~rtvla.metrics.recorder.Recorder` serialises access.
    """

    __slots__ = ("_counts", "_inv_log", "_lowest", "count", "highest_s", "max", "min", "sum")

    def __init__(self, lowest_s: float = 1e-7, highest_s: float = 1e3) -> None:
        if not 0 < lowest_s < highest_s:
            raise ValueError(f"need 0 < lowest_s < highest_s, got {lowest_s}, {highest_s}")
        self._lowest = lowest_s
        self.highest_s = highest_s
        self._inv_log = 1.0 / _LOG_RATIO
        n = int(math.ceil(math.log(highest_s / lowest_s) * self._inv_log)) + 2
        self._counts = np.zeros(n, dtype=np.int64)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def record(self, seconds: float) -> None:
        """Add one sample (O(1)). Non-finite values are rejected with ``ValueError``."""
        if not -math.inf < seconds < math.inf:
            raise ValueError(f"latency sample must be finite, got {seconds}")
        if seconds <= self._lowest:
            idx = 0
        else:
            idx = int(math.log(seconds / self._lowest) * self._inv_log) + 1
            if idx >= len(self._counts):
                idx = len(self._counts) - 1
        self._counts[idx] += 1
        self.count += 1
        self.sum += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def record_many(self, values: np.ndarray) -> None:
        """Add a batch of samples (vectorised; used by the Recorder's buffered hot path)."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return
        if not np.all(np.isfinite(v)):
            raise ValueError(f"latency samples must be finite, got {v[~np.isfinite(v)][:3]}")
        n = len(self._counts)
        idx = np.zeros(v.shape, dtype=np.int64)
        above = v > self._lowest
        idx[above] = (np.log(v[above] / self._lowest) * self._inv_log).astype(np.int64) + 1
        np.minimum(idx, n - 1, out=idx)
        self._counts += np.bincount(idx, minlength=n)
        self.count += int(v.size)
        self.sum += float(v.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def merge(self, other: LatencyHistogram) -> None:
        if len(other._counts) != len(self._counts) or other._lowest != self._lowest:
            raise ValueError("can only merge histograms with the same range")
        self._counts += other._counts
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def counts(self) -> np.ndarray:
        """A copy of the bucket counts (for :meth:`since`)."""
        return self._counts.copy()

    def since(self, prev_counts: np.ndarray, prev_count: int, prev_sum: float,
              max_since: float) -> LatencyHistogram:
        """The samples recorded after a :meth:`counts` snapshot, as a new histogram.

        ``max_since`` is the largest sample since then (tracked by the caller); the minimum
        is the lower edge of the lowest non-empty bucket.
        """
        out = LatencyHistogram.__new__(LatencyHistogram)
        out._lowest = self._lowest
        out.highest_s = self.highest_s
        out._inv_log = self._inv_log
        out._counts = self._counts - prev_counts
        out.count = self.count - prev_count
        out.sum = self.sum - prev_sum
        out.max = max_since if out.count else -math.inf
        out.min = math.inf
        nz = np.flatnonzero(out._counts)
        if nz.size:
            out.min = self._lowest * _RATIO ** max(0, int(nz[0]) - 1)
        return out

    def reset(self) -> None:
        self._counts[:] = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def _bucket_value(self, idx: int) -> float:
        if idx == 0:
            return self._lowest
        lo = self._lowest * _RATIO ** (idx - 1)
        return lo * math.sqrt(_RATIO)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) in seconds; NaN when empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        if self.count == 0:
            return math.nan
        if q <= 0:
            return self.min
        if q >= 100:
            return self.max
        return self.percentiles((q,))[q]

    def percentiles(self, qs: tuple[float, ...] = (50, 90, 99, 99.9)) -> dict[float, float]:
        """Several percentiles in one pass over the buckets."""
        out = {q: math.nan for q in qs}
        if self.count == 0:
            return out
        cum = np.cumsum(self._counts)
        for q in qs:
            if q <= 0:
                out[q] = self.min
            elif q >= 100:
                out[q] = self.max
            else:
                idx = int(np.searchsorted(cum, q / 100.0 * self.count, side="left"))
                out[q] = min(max(self._bucket_value(idx), self.min), self.max)
        return out

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def summary_ms(self) -> dict[str, Any]:
        """``{count, mean, p50, p90, p99, p999, max}`` in milliseconds (None when empty)."""
        if not self.count:
            return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None,
                    "p999": None, "max": None}
        p = self.percentiles((50, 90, 99, 99.9))
        return {
            "count": self.count,
            "mean": self.mean * 1e3,
            "p50": p[50] * 1e3,
            "p90": p[90] * 1e3,
            "p99": p[99] * 1e3,
            "p999": p[99.9] * 1e3,
            "max": self.max * 1e3,
        }
