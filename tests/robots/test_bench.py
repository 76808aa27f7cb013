from __future__ import annotations

import json

from rtvla.robots.sim.__main__ import main
from rtvla.robots.sim.bench import run_sim_bench


def test_bench_reports_physics_camera_and_read_figures() -> None:
    figures, frame = run_sim_bench(0.6, width=160, height=120, rate_hz=20.0, depth=False)
    assert frame is not None and frame.image.shape == (120, 160, 3)
    assert 0.5 < figures["physics"]["realtime_factor"] < 1.5
    assert figures["camera"]["achieved_hz"] > 0
    assert figures["read_state_us"]["n"] > 10
    assert figures["read_state_us"]["p50"] < 5000


def test_module_cli_writes_json_and_png(tmp_path) -> None:
    out, png = tmp_path / "sim.json", tmp_path / "frame.png"
    rc = main(
        [
            "--seconds",
            "0.4",
            "--width",
            "96",
            "--height",
            "72",
            "--json",
            str(out),
            "--png",
            str(png),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert {"physics", "camera", "read_state_us"} <= set(data)
    assert png.stat().st_size > 100
