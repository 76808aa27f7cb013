from __future__ import annotations

import math

import numpy as np
import pytest

from rtvla.metrics import LatencyHistogram


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "exponential"])
def test_percentiles_within_one_percent_of_numpy(dist):
    rng = np.random.default_rng(7)
    if dist == "lognormal":
        data = rng.lognormal(mean=math.log(0.002), sigma=1.0, size=200_000)
    elif dist == "uniform":
        data = rng.uniform(1e-5, 0.05, size=200_000)
    else:
        data = rng.exponential(0.01, size=200_000) + 1e-6
    h = LatencyHistogram()
    h.record_many(data[:100_000])
    for v in data[100_000:]:
        h.record(float(v))
    for q in (50, 90, 99, 99.9):
        exact = np.percentile(data, q)
        assert h.percentile(q) == pytest.approx(exact, rel=0.011), q
    assert h.max == data.max() and h.min == data.min() and h.count == data.size
    assert h.mean == pytest.approx(data.mean())


def test_memory_is_constant():
    h = LatencyHistogram()
    before = h._counts.nbytes
    h.record_many(np.random.default_rng(1).uniform(1e-6, 1.0, size=1_000_000))
    assert h._counts.nbytes == before < 16_000


def test_empty_and_invalid():
    h = LatencyHistogram()
    assert math.isnan(h.percentile(50))
    assert h.summary_ms()["p99"] is None
    with pytest.raises(ValueError, match="finite"):
        h.record(float("nan"))
    with pytest.raises(ValueError, match="percentile must be in"):
        h.percentile(101)


def test_since_gives_the_interval():
    h = LatencyHistogram()
    h.record_many(np.full(1000, 0.001))
    prev = (h.counts(), h.count, h.sum)
    h.record_many(np.full(100, 0.010))
    part = h.since(*prev, max_since=0.010)
    assert part.count == 100
    assert part.percentile(50) == pytest.approx(0.010, rel=0.011)
