from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rtvla.metrics import Recorder
from rtvla.metrics.prometheus import LATENCY_BUCKETS_S, RecorderCollector, serve

# Units Prometheus' naming guide asks to replace by base units, and type names.
_NON_BASE = re.compile(r"(milli|micro|nano|kilo|mega|giga)?(seconds|bytes)|percent(?!ile)|_ms$|_us$|_mb$|"
                       r"minutes|hours")
_TYPE_NAMES = ("gauge", "counter", "histogram", "summary")


def _recorder() -> Recorder:
    rec = Recorder()
    for _ in range(50):
        rec.latency("control", 0.0021)
        rec.count("control")
    rec.latency("control", 0.050)
    rec.utilization("perception", 40.0, 300.0)
    rec.gauge("adapt", "level", 2)
    return rec


def _exposition(rec: Recorder) -> str:
    registry = CollectorRegistry()
    registry.register(RecorderCollector(rec))
    return generate_latest(registry).decode()


def test_latency_is_a_histogram_from_the_recorders_buckets() -> None:
    fams = {f.name: f for f in text_string_to_metric_families(_exposition(_recorder()))}
    lat = fams["rtvla_latency_seconds"]
    assert lat.type == "histogram"
    buckets = [s for s in lat.samples if s.name == "rtvla_latency_seconds_bucket"]
    les = [s.labels["le"] for s in buckets]
    assert les[-1] == "+Inf" and len(les) == len(LATENCY_BUCKETS_S) + 1
    values = [s.value for s in buckets]
    assert values == sorted(values)  # cumulative
    by_le = {float(s.labels["le"]): s.value for s in buckets}
    assert by_le[0.002] == 0 and by_le[0.005] == 50 and by_le[0.1] == 51 and by_le[float("inf")] == 51
    count = next(s for s in lat.samples if s.name == "rtvla_latency_seconds_count")
    total = next(s for s in lat.samples if s.name == "rtvla_latency_seconds_sum")
    assert count.labels == {"component": "control"} and count.value == 51
    assert total.value == pytest.approx(50 * 0.0021 + 0.05)
    p99 = next(s for s in fams["rtvla_latency_percentile_seconds"].samples
               if s.labels["percentile"] == "99")
    assert 0.002 < p99.value < 0.06


def test_names_follow_prometheus_conventions() -> None:
    fams = list(text_string_to_metric_families(_exposition(_recorder())))
    assert fams
    for fam in fams:
        assert fam.documentation, f"{fam.name} has no help text"
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", fam.name), fam.name
        assert not any(t in fam.name for t in _TYPE_NAMES), f"type name in {fam.name}"
        m = _NON_BASE.search(fam.name)
        assert m is None or m.group(0) in ("seconds", "bytes"), f"non-base unit in {fam.name}"
        for s in fam.samples:
            if fam.type == "counter":
                assert s.name.endswith("_total") or s.name.endswith("_created"), s.name
            else:
                assert not s.name.endswith("_total"), s.name
            if fam.type not in ("histogram", "summary"):
                assert "le" not in s.labels and "quantile" not in s.labels, s.name
    names = {f.name for f in fams}
    assert {"rtvla_cpu_utilization_ratio", "rtvla_resident_memory_bytes", "rtvla_missed_cycles",
            "rtvla_budget_violations"} <= names
    by = {f.name: f for f in fams}
    viol = by["rtvla_budget_violations"].samples[0]
    assert viol.name == "rtvla_budget_violations_total"
    assert viol.labels == {"component": "control", "kind": "latency"} and viol.value == 1
    assert any(s.value == pytest.approx(0.4) for s in by["rtvla_cpu_utilization_ratio"].samples)
    assert any(s.value == pytest.approx(300 * 2**20) for s in by["rtvla_resident_memory_bytes"].samples)
    assert by["rtvla_component_reading"].samples[0].labels == {"component": "adapt", "name": "level"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_check_metrics_is_clean() -> None:
    out = subprocess.run(["promtool", "check", "metrics"], input=_exposition(_recorder()),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


def test_serve_binds_loopback_by_default() -> None:
    server, _thread = serve(_recorder(), port=0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "rtvla_latency_seconds_bucket" in body
    finally:
        server.shutdown()
        server.server_close()
