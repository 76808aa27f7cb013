from __future__ import annotations

import numpy as np
import pytest

from rtvla.errors import ConfigError, FrameError
from rtvla.perception import (
    ColorClass,
    ColorDetector,
    Detection,
    Intrinsics,
    check_depth,
    check_image,
    deproject,
    filter_detections,
)

from .conftest import scene


def test_check_image_names_the_problem():
    with pytest.raises(FrameError, match="dtype uint8, got float32"):
        check_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(FrameError, match=r"shape HxWx3, got \(4, 4\)"):
        check_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(FrameError, match="numpy array, got list"):
        check_image([[1, 2, 3]])
    with pytest.raises(FrameError, match="does not match image shape"):
        check_depth(np.zeros((3, 3), np.float32), (4, 4, 3))
    img = np.zeros((2, 3, 3), np.uint8)
    assert check_image(img) is img


def test_intrinsics_scale_and_deproject():
    k = Intrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)
    h = k.scaled(320, 240)
    assert (h.fx, h.cx, h.cy, h.width) == (250.0, 160.0, 120.0, 320)
    assert deproject(320.0, 240.0, 2.0, k) == (0.0, 0.0, 2.0)
    assert deproject(420.0, 140.0, 2.0, k) == pytest.approx((0.4, -0.4, 2.0))
    with pytest.raises(FrameError):
        Intrinsics(0, 1, 0, 0, 10, 10)


def test_color_detector_finds_the_three_squares():
    dets = ColorDetector().detect(scene())
    by_label = {d.label: d for d in dets}
    assert set(by_label) == {"red", "green", "blue"}
    assert by_label["red"].box == (100.0, 100.0, 160.0, 160.0)
    assert by_label["green"].box == (300.0, 200.0, 340.0, 260.0)
    assert by_label["blue"].box == (480.0, 320.0, 560.0, 400.0)
    assert all(d.score > 0.95 for d in dets)
    assert [d.class_id for d in sorted(dets, key=lambda d: d.class_id)] == [0, 1, 2]


def test_color_detector_min_area_and_size_classes():
    img = scene()
    img[10:14, 10:14] = (230, 20, 20)  # 16 px red speck: below the default minimum
    dets = ColorDetector().detect(img)
    assert sum(d.label == "red" for d in dets) == 1
    classes = [ColorClass("blue_bin", "blue", min_area_fraction=0.015), ColorClass("blue_cube", "blue"),
               ColorClass("red_cube", "red")]
    dets = ColorDetector(classes=classes).detect(img)
    # blue square: 80x80 = 6400 px = 2.1 % of the image -> a bin; green has no class -> dropped
    assert sorted(d.label for d in dets) == ["blue_bin", "red_cube"]
    with pytest.raises(ConfigError, match="unknown color 'purple'"):
        ColorDetector(classes=[ColorClass("x", "purple")])


def test_color_detector_3d_positions_from_depth():
    img = scene()
    depth = np.full(img.shape[:2], 3.0, np.float32)
    depth[100:160, 100:160] = 1.5
    depth[0:5, 0:5] = np.nan
    k = Intrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)
    dets = {d.label: d for d in ColorDetector().detect(img, depth=depth, intrinsics=k)}
    u, v = 130.0, 130.0
    assert dets["red"].position == pytest.approx(((u - 320) * 1.5 / 500, (v - 240) * 1.5 / 500, 1.5))
    assert dets["blue"].position[2] == pytest.approx(3.0)


def test_filter_confidence_count_and_allow_list():
    dets = [Detection((0, 0, 1, 1), lbl, s) for lbl, s in
            (("a", 0.9), ("b", 0.4), ("a", 0.6), ("c", 0.95), ("a", 0.7))]
    out = filter_detections(dets, min_confidence=0.5, max_detections=2, allow={"a"})
    assert [(d.label, d.score) for d in out] == [("a", 0.9), ("a", 0.7)]
