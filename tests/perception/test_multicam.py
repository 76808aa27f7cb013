from __future__ import annotations

import json

import pytest

from rtvla.errors import ConfigError, ResourceError
from rtvla.perception import (
    Calibration,
    CameraMode,
    CameraRequest,
    CamerasConfig,
    ColorDetector,
    MultiCameraOptimizer,
    PerceptionConfig,
    ResourceEstimate,
    calibrate,
    load_or_calibrate,
)
from rtvla.resources import Capacity, ResourceAllocator


def fixed(cost=2e-8):
    return Calibration(cost, "k", "color", 0.0, [(307200, cost * 307200)])


def test_estimates_follow_the_formulas():
    opt = MultiCameraOptimizer(fixed(2e-8), buffered_frames=3)
    plans = opt.optimize({
        "head": CameraRequest(("object_detection",)),
        "base": CameraRequest(("navigation", "object_detection")),  # first in priority wins
        "wrist": CameraRequest(("detailed_inspection",), depth=True),
        "aux": CameraRequest(mode=CameraMode(100, 100, 5)),
    })
    head = plans["head"]
    assert (head.mode.width, head.mode.height, head.mode.fps) == (640, 480, 30)
    assert head.estimate.cpu_cores == pytest.approx(640 * 480 * 30 * 2e-8)
    assert head.estimate.memory_mb == pytest.approx(3 * 640 * 480 * 3 / 2**20)
    assert head.estimate.bandwidth_mbps == pytest.approx(640 * 480 * 3 * 30 * 8 / 1e6)
    assert plans["base"].use_case == "object_detection"
    wrist = plans["wrist"].estimate
    assert wrist.memory_mb == pytest.approx(3 * 1280 * 960 * 7 / 2**20)  # RGB + float32 depth
    assert plans["aux"].use_case is None and plans["aux"].mode.fps == 5
    total = opt.total(plans)
    assert total.cpu_cores == pytest.approx(sum(p.estimate.cpu_cores for p in plans.values()))
    with pytest.raises(ConfigError, match="unknown use case 'flying'"):
        opt.optimize({"x": CameraRequest(("flying",))})


def test_requests_go_through_the_resource_allocator():
    alloc = ResourceAllocator(Capacity((0, 1), 4096.0, 2048.0), reserve_memory_mb=0)
    opt = MultiCameraOptimizer(fixed(2e-8), allocator=alloc, request_options={"priority": 7})
    plans = opt.optimize({"head": CameraRequest(("object_detection",))})
    a = plans["head"].allocation
    assert a.component == "camera:head" and a.request.priority == 7
    assert a.cpu_cores == pytest.approx(plans["head"].estimate.cpu_cores)
    assert isinstance(plans["head"].estimate, ResourceEstimate)
    # 1280x960 at 10 fps with a huge per-pixel cost cannot fit on 2 cores
    greedy = MultiCameraOptimizer(fixed(1e-6), allocator=alloc)
    with pytest.raises(ResourceError, match=r"camera 'arm' \(detailed_inspection"):
        greedy.optimize({"arm": CameraRequest(("detailed_inspection",))})


def test_calibration_is_measured_once_and_cached(tmp_path):
    calls = []

    def measure(det):
        calls.append(det.name)
        return Calibration(3e-8, "ignored", det.name, 1.0, [(100, 3e-6)])

    a = load_or_calibrate(cache_dir=tmp_path, measure=measure)
    b = load_or_calibrate(cache_dir=tmp_path, measure=measure)
    assert calls == ["color"] and a.cost_per_pixel_s == b.cost_per_pixel_s == 3e-8
    data = json.loads((tmp_path / "perception_calibration.json").read_text())
    assert len(data) == 1 and "color|" in next(iter(data))
    load_or_calibrate(cache_dir=tmp_path, measure=measure, refresh=True)
    assert calls == ["color", "color"]
    (tmp_path / "perception_calibration.json").write_text("{not json")
    load_or_calibrate(cache_dir=tmp_path, measure=measure)
    assert len(calls) == 3


def test_real_calibration_measures_a_positive_cost():
    cal = calibrate(ColorDetector(), resolutions=((64, 48), (160, 120)), repeats=3)
    assert cal.cost_per_pixel_s > 0
    assert [p for p, _ in cal.samples] == [64 * 48, 160 * 120]


def test_config_sections_validate_and_build():
    cams = CamerasConfig.from_section({
        "use_cases": {"navigation": {"width": 160, "height": 120, "fps": 10}},
        "devices": {"base": {"use_cases": ["navigation"]}},
    })
    assert cams.modes()["navigation"] == CameraMode(160, 120, 10)
    assert cams.modes()["object_detection"] == CameraMode(640, 480, 30)
    assert cams.requests()["base"].use_cases == ("navigation",)
    with pytest.raises(ConfigError, match=r"cameras\.devices\.base\.fps: unknown key"):
        CamerasConfig.from_section({"devices": {"base": {"fps": 3}}})
    pcfg = PerceptionConfig.from_section({"classes": ["red"], "resolutions": [[320, 240]]})
    settings = pcfg.pipeline_settings()
    assert settings.allow == frozenset({"red"}) and settings.resolutions == ((320, 240),)
    assert pcfg.build_detectors()[0].name == "color"
    with pytest.raises(ConfigError, match=r"perception\.model is required"):
        PerceptionConfig.from_section({"detector": "onnx"})
    with pytest.raises(ConfigError, match=r"perception\.min_confidence"):
        PerceptionConfig.from_section({"min_confidence": 5})
