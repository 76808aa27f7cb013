from __future__ import annotations

import numpy as np
import pytest

from rtvla.errors import ModelError
from rtvla.perception import OnnxDetector, letterbox
from rtvla.perception.testing_models import Candidate, build_yolo_model


def test_letterbox_geometry():
    img = np.zeros((480, 640, 3), np.uint8)
    boxed, lb = letterbox(img, (320, 320))
    assert boxed.shape == (320, 320, 3)
    assert (lb.scale, lb.pad_x, lb.pad_y) == (0.5, 0.0, 40.0)
    assert boxed[0, 0, 0] == 114 and boxed[40, 0, 0] == 0 and boxed[279, 0, 0] == 0
    assert boxed[280, 0, 0] == 114


def test_decode_and_classwise_nms_map_boxes_back(tmp_path):
    # Input 320x320, image 640x480: scale 0.5, pad_y 40. Candidates in input pixels.
    cands = [
        Candidate(160, 160, 40, 30, class_id=1, score=0.90),  # kept
        Candidate(162, 161, 40, 30, class_id=1, score=0.80),  # same class, IoU ~0.9 -> suppressed
        Candidate(161, 160, 40, 30, class_id=0, score=0.85),  # other class, same place -> kept
        Candidate(60, 100, 20, 20, class_id=0, score=0.70),   # kept
        Candidate(250, 250, 30, 30, class_id=1, score=0.10),  # below the threshold
    ]
    path = build_yolo_model(tmp_path / "m.onnx", input_size=(320, 320), num_classes=2,
                            candidates=cands, num_anchors=64, class_names=["cube", "bin"])
    det = OnnxDetector(path, conf_threshold=0.25, iou_threshold=0.5)
    assert det.input_size == (320, 320)
    assert det.class_names == ["cube", "bin"]
    out = det.detect(np.zeros((480, 640, 3), np.uint8))
    got = [(d.label, round(d.score, 2), tuple(round(v, 3) for v in d.box)) for d in out]
    assert got == [
        ("bin", 0.9, (280.0, 210.0, 360.0, 270.0)),
        ("cube", 0.85, (282.0, 210.0, 362.0, 270.0)),
        ("cube", 0.7, (100.0, 100.0, 140.0, 140.0)),
    ]


def test_transposed_layout_and_clipping(tmp_path):
    cands = [Candidate(5, 40, 20, 20, class_id=2, score=0.9)]  # sticks out on the left
    path = build_yolo_model(tmp_path / "t.onnx", input_size=(320, 320), num_classes=3,
                            candidates=cands, num_anchors=16, transposed=True)
    det = OnnxDetector(path, class_names=["a", "b", "c"])
    (d,) = det.detect(np.zeros((480, 640, 3), np.uint8))
    assert d.label == "c" and d.class_id == 2
    # x: (-5 .. 15) -> clipped 0 .. 30; y: (30..50 - 40) / 0.5 -> (-20 .. 20) clipped 0 .. 20
    assert d.box == pytest.approx((0.0, 0.0, 30.0, 20.0))


def test_bad_models_give_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        OnnxDetector(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not really a protobuf" * 10)
    with pytest.raises(ModelError, match="cannot load model"):
        OnnxDetector(corrupt)
    # 2 classes declared but the output has 4 + 3 channels
    path = build_yolo_model(tmp_path / "m.onnx", input_size=(64, 64), num_classes=3,
                            num_anchors=16)
    with pytest.raises(ModelError, match="unexpected model output layout"):
        OnnxDetector(path, class_names=["a", "b"])
    tiny = build_yolo_model(tmp_path / "tiny.onnx", input_size=(64, 64), num_classes=0,
                            num_anchors=3)
    det = OnnxDetector(tiny)
    with pytest.raises(ModelError, match="unexpected model output layout"):
        det.detect(np.zeros((64, 64, 3), np.uint8))


def test_stem_model_depends_on_input(tmp_path):
    path = build_yolo_model(tmp_path / "s.onnx", input_size=(64, 64), num_classes=1,
                            candidates=[Candidate(32, 32, 10, 10, 0, 0.9)], num_anchors=8,
                            stem=(4, 8))
    det = OnnxDetector(path, threads=1, graph_optimization="basic")
    assert len(det.detect(np.full((64, 64, 3), 200, np.uint8))) == 1
