"""Build small YOLO-layout ONNX models with ``onnx.helper`` (tests and the offline bench).

The model's output is a known ``[1, 4 + nc, N]`` tensor (the given candidates, zeros
elsewhere) that still depends on the input, so ONNX Runtime cannot fold it away; an
optional convolution stem gives inference a real, input-size-dependent cost. Requires the
``onnx`` package (a test dependency of rtvla).

Usage::

    path = build_yolo_model(tmp_path / "m.onnx", input_size=(320, 320), num_classes=2,
                            candidates=[Candidate(160, 120, 40, 30, class_id=1, score=0.9)])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Candidate", "build_yolo_model", "yolo_output"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One raw candidate in model-input pixels: centre, size, class and its score."""

    cx: float
    cy: float
    w: float
    h: float
    class_id: int
    score: float


def yolo_output(candidates: Sequence[Candidate], num_classes: int, num_anchors: int
                ) -> np.ndarray:
    """The ``[1, 4 + nc, N]`` float32 tensor holding ``candidates`` in its first columns."""
    if len(candidates) > num_anchors:
        raise ValueError(f"{len(candidates)} candidates do not fit in {num_anchors} anchors")
    out = np.zeros((1, 4 + num_classes, num_anchors), np.float32)
    for j, c in enumerate(candidates):
        if not 0 <= c.class_id < num_classes:
            raise ValueError(f"candidate class_id {c.class_id} outside 0..{num_classes - 1}")
        out[0, :4, j] = (c.cx, c.cy, c.w, c.h)
        out[0, 4 + c.class_id, j] = c.score
    return out


def build_yolo_model(
    path: str | Path,
    *,
    input_size: tuple[int, int] = (640, 640),
    num_classes: int = 3,
    candidates: Sequence[Candidate] = (),
    num_anchors: int = 8400,
    stem: Sequence[int] = (),
    class_names: Sequence[str] | None = None,
    transposed: bool = False,
    seed: int = 0,
) -> Path:
    """Write a YOLOv8-layout model to ``path`` and return it.

    Args:
        input_size: (width, height) of the static ``images`` input ``[1, 3, H, W]``.
        candidates: what the output holds (see :func:`yolo_output`).
        stem: output channels of stride-2 3x3 conv+ReLU layers run on the input (cost only;
            their result is multiplied by zero before it reaches the output).
        class_names: stored as Ultralytics-style ``names`` metadata.
        transposed: emit ``[1, N, 4 + nc]`` instead.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, h = input_size
    const = yolo_output(candidates, num_classes, num_anchors)
    if transposed:
        const = np.ascontiguousarray(const.transpose(0, 2, 1))
    rng = np.random.default_rng(seed)
    nodes, inits = [], [numpy_helper.from_array(const, "raw"),
                        numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    x, cin = "images", 3
    for i, cout in enumerate(stem):
        wt = (rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32)
        inits.append(numpy_helper.from_array(wt, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], kernel_shape=[3, 3],
                                      strides=[2, 2], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x, cin = f"r{i}", cout
    nodes += [
        helper.make_node("ReduceMean", [x], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["m0"]),
        helper.make_node("Add", ["raw", "m0"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "rtvla_test_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(const.shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="rtvla")
    model.ir_version = 8
    if class_names is not None:
        names = {i: n for i, n in enumerate(class_names)}
        helper.set_model_props(model, {"names": repr(names)})
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
