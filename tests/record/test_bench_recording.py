"""`rtvla bench recording` measures recording on against off on the same workload."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtvla.errors import RenderError


def test_bench_recording_reports_cost_and_lateness(tmp_path: Path) -> None:
    from rtvla.bench.recording import bench_recording

    labels: list[str] = []
    try:
        res = bench_recording(seconds=2.0, directory=tmp_path, progress=labels.append)
    except RenderError as exc:
        pytest.skip(f"no offscreen rendering here: {exc}")
    assert labels == ["recording off (1/1)", "recording on (1/1)"]
    off, on = res["rows"]
    assert not off["recording"] and on["recording"]
    for row in (off, on):
        assert row["control_hz"] > 50 and row["lateness_p99_us"] >= row["lateness_p50_us"] >= 0
        assert 0 < row["cpu_percent"] < 400
    assert on["mcap_bytes"] > 0 and on["mp4_bytes"] > 0 and on["mb_per_s"] > 0
    assert on["recorder_threads_cpu_percent"] > 0 and set(on["cost_breakdown_cpu_percent"]) == {
        "mcap_writer", "taps", "video_encode", "video_compose_and_scene_view"}
    assert (tmp_path / "run-0" / "run.mcap").is_file() and (tmp_path / "run-0" / "episode.mp4").is_file()
    s = res["summary"]
    assert s["cost_cpu_percent"] == pytest.approx(s["cpu_percent_on"] - s["cpu_percent_off"])
    assert s["goal_cpu_percent"] == 5.0 and isinstance(s["within_goal"], bool)
