from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rtvla.metrics import Recorder
from rtvla.metrics.prometheus import RecorderCollector, serve


def _recorder():
    rec = Recorder()
    for _ in range(50):
        rec.latency("control", 0.002)
        rec.count("control")
    rec.latency("control", 0.050)
    rec.utilization("perception", 40.0, 300.0)
    rec.gauge("adapt", "level", 2)
    return rec


def test_exposition_parses_with_prometheus_parser():
    registry = CollectorRegistry()
    registry.register(RecorderCollector(_recorder()))
    text = generate_latest(registry).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    summary = fams["rtvla_latency_seconds"]
    count = [s for s in summary.samples if s.name.endswith("_count")][0]
    assert count.labels == {"component": "control"} and count.value == 51
    q99 = [s for s in fams["rtvla_latency_quantile_seconds"].samples
           if s.labels["quantile"] == "0.99"][0]
    assert 0.0019 < q99.value < 0.06
    viol = fams["rtvla_budget_violations"].samples[0]
    assert viol.labels == {"component": "control", "kind": "latency"} and viol.value == 1
    assert fams["rtvla_gauge"].samples[0].labels == {"component": "adapt", "name": "level"}
    assert any(s.value == 40.0 for s in fams["rtvla_cpu_percent"].samples)


def test_serve_binds_loopback_by_default():
    server, _thread = serve(_recorder(), port=0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "rtvla_latency_seconds_count" in body
    finally:
        server.shutdown()
        server.server_close()
