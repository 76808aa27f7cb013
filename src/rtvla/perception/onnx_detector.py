"""ONNX Runtime detector for YOLO-family models (YOLOv8 / YOLO11 export layout).

The model takes ``[1, 3, H, W]`` float32 RGB in 0..1 and returns ``[1, 4 + nc, N]``: for
each of N candidates the box centre x, centre y, width, height in input pixels followed by
nc class scores (no objectness column). ``[1, N, 4 + nc]`` is accepted too when the class
count tells the two apart. The detector letterboxes the image (keeps aspect, pads with grey
114), decodes, runs class-wise NMS through OpenCV, and maps boxes back to the original
image.

Usage::

    det = OnnxDetector("yolo11n.onnx", class_names=["person", ...], threads=1)
    dets = det.detect(rgb_image)       # boxes in rgb_image pixels
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rtvla.errors import ConfigError, ModelError
from rtvla.perception.detections import Detection
from rtvla.perception.frames import check_image

__all__ = ["GRAPH_OPTIMIZATION", "Letterbox", "OnnxDetector", "decode_yolo", "letterbox"]

logger = logging.getLogger(__name__)

GRAPH_OPTIMIZATION = ("disable", "basic", "extended", "all")


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How an image was fitted into the model input: ``input = image * scale + pad``."""

    scale: float
    pad_x: float
    pad_y: float
    width: int  # original image width
    height: int

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``[N, 4]`` x1,y1,x2,y2 boxes from input pixels to image pixels (clipped)."""
        out = boxes.astype(np.float64, copy=True)
        xs, ys = out[:, 0::2], out[:, 1::2]  # views: x1, x2 and y1, y2
        xs -= self.pad_x
        xs /= self.scale
        ys -= self.pad_y
        ys /= self.scale
        np.clip(xs, 0, self.width, out=xs)
        np.clip(ys, 0, self.height, out=ys)
        return out


def letterbox(image: np.ndarray, size: tuple[int, int], fill: int = 114
              ) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` to fit ``size`` = (width, height) keeping aspect; pad centred."""
    h, w = image.shape[:2]
    in_w, in_h = size
    scale = min(in_w / w, in_h / h)
    new_w, new_h = round(w * scale), round(h * scale)
    pad_x, pad_y = (in_w - new_w) / 2.0, (in_h - new_h) / 2.0
    resized = image if (new_w, new_h) == (w, h) else cv2.resize(
        image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    bottom, right = in_h - new_h - top, in_w - new_w - left
    out = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT,
                             value=(fill, fill, fill))
    return out, Letterbox(scale, float(left), float(top), w, h)


def decode_yolo(
    output: np.ndarray,
    lb: Letterbox,
    *,
    num_classes: int | None,
    conf_threshold: float,
    iou_threshold: float,
    max_detections: int,
    class_names: Sequence[str] | None = None,
) -> list[Detection]:
    """Decode a YOLOv8-layout output, class-wise NMS, boxes mapped back through ``lb``."""
    out = _as_channels_first(output, num_classes)
    nc = out.shape[0] - 4
    scores_all = out[4:]
    class_ids = np.argmax(scores_all, axis=0)
    scores = scores_all[class_ids, np.arange(out.shape[1])]
    keep = scores >= conf_threshold
    if not keep.any():
        return []
    cx, cy, bw, bh = out[0, keep], out[1, keep], out[2, keep], out[3, keep]
    scores, class_ids = scores[keep].astype(np.float32), class_ids[keep]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    img_boxes = lb.to_image(boxes)
    xywh = np.stack([img_boxes[:, 0], img_boxes[:, 1], img_boxes[:, 2] - img_boxes[:, 0],
                     img_boxes[:, 3] - img_boxes[:, 1]], axis=1)
    idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), class_ids.tolist(),
                                  conf_threshold, iou_threshold)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    idx = idx[np.argsort(-scores[idx], kind="stable")][:max_detections]
    names = list(class_names) if class_names is not None else []
    dets = []
    for i in idx:
        cid = int(class_ids[i])
        label = names[cid] if cid < len(names) else f"class_{cid}"
        x1, y1, x2, y2 = (float(v) for v in img_boxes[i])
        dets.append(Detection((x1, y1, x2, y2), label, float(scores[i]), cid))
    if nc and names and len(names) != nc:
        logger.debug("model has %d classes but %d names were given", nc, len(names))
    return dets


def _as_channels_first(output: np.ndarray, num_classes: int | None) -> np.ndarray:
    if output.ndim != 3 or output.shape[0] != 1:
        raise ModelError(
            f"unexpected model output layout: shape {output.shape}; "
            "expected YOLOv8 layout [1, 4 + num_classes, N]"
        )
    _, a, b = output.shape
    if num_classes is not None:
        c = 4 + num_classes
        if a == c:
            return output[0]
        if b == c:
            return output[0].T
        raise ModelError(
            f"unexpected model output layout: shape {output.shape} has no axis of size "
            f"4 + {num_classes} classes = {c}; expected [1, {c}, N]"
        )
    if a < 5 and b < 5:
        raise ModelError(
            f"unexpected model output layout: shape {output.shape}; need at least 5 "
            "channels (4 box values + 1 class score)"
        )
    return output[0] if a <= b else output[0].T


def _graph_level(name: str) -> Any:
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    try:
        return levels[name]
    except KeyError:
        raise ConfigError(
            f"graph_optimization must be one of {list(GRAPH_OPTIMIZATION)}, got {name!r}"
        ) from None


class OnnxDetector:
    """A YOLO-layout ONNX model run with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file.
        class_names: names by class id; default: the model's ``names`` metadata (as
            Ultralytics exports write it), else ``class_<id>``.
        input_size: (width, height) for models with a dynamic input shape.
        conf_threshold, iou_threshold: score threshold and NMS IoU.
        max_detections: most detections kept after NMS.
        threads: intra-op threads (1 = one core); inter-op threads stay 1.
        graph_optimization: one of ``disable``, ``basic``, ``extended``, ``all``.
        providers: ONNX Runtime execution providers (CPU by default).
        name: detector variant name.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        class_names: Sequence[str] | None = None,
        input_size: tuple[int, int] | None = None,
        conf_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        max_detections: int = 100,
        threads: int = 1,
        graph_optimization: str = "all",
        providers: Sequence[str] = ("CPUExecutionProvider",),
        name: str = "onnx",
    ) -> None:
        import onnxruntime as ort

        if not 0 <= conf_threshold <= 1:
            raise ConfigError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
        if not 0 < iou_threshold <= 1:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        if max_detections < 1:
            raise ConfigError(f"max_detections must be >= 1, got {max_detections}")
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = _graph_level(graph_optimization)
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load model {path}: {exc}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"model {path} must have 1 input, has {len(inputs)}")
        if not outputs:
            raise ModelError(f"model {path} has no outputs")
        inp = inputs[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ModelError(
                f"model {path} input {inp.name!r} has shape {shape}; expected [1, 3, H, W]"
            )
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int):
            self.input_size = (w, h)
        elif input_size is not None:
            self.input_size = (int(input_size[0]), int(input_size[1]))
        else:
            raise ModelError(
                f"model {path} has a dynamic input size {shape}; pass input_size=(w, h)"
            )
        meta_names = self._metadata_names()
        self.class_names = list(class_names) if class_names is not None else meta_names
        self.num_classes = len(self.class_names) if self.class_names else None
        out_shape = outputs[0].shape
        if self.num_classes is None and len(out_shape) == 3 and isinstance(out_shape[1], int):
            c = out_shape[1]
            if isinstance(out_shape[2], int) and out_shape[2] < c:
                c = out_shape[2]
            self.num_classes = c - 4 if c >= 5 else None
        if len(out_shape) != 3:
            raise ModelError(
                f"model {path} output {outputs[0].name!r} has shape {out_shape}; "
                "expected YOLOv8 layout [1, 4 + num_classes, N]"
            )
        if self.num_classes is not None and all(isinstance(d, int) for d in out_shape):
            _as_channels_first(np.zeros(out_shape, np.float32), self.num_classes)
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.name = name
        self.model_path = path

    def _metadata_names(self) -> list[str] | None:
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        raw = meta.get("names")
        if not raw:
            return None
        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None
        if isinstance(parsed, dict):
            return [str(parsed[k]) for k in sorted(parsed)]
        if isinstance(parsed, (list, tuple)):
            return [str(v) for v in parsed]
        return None

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Letterbox and convert to a ``[1, 3, H, W]`` float32 tensor in 0..1."""
        boxed, lb = letterbox(image, self.input_size)
        tensor = np.ascontiguousarray(boxed.transpose(2, 0, 1)[None], dtype=np.float32)
        tensor *= 1.0 / 255.0
        return tensor, lb

    def infer(self, prepared: tuple[np.ndarray, Letterbox],
              image_shape: tuple[int, ...] = ()) -> list[Detection]:
        tensor, lb = prepared
        try:
            output = self.session.run(None, {self.input_name: tensor})[0]
        except Exception as exc:
            raise ModelError(f"model {self.model_path} failed to run: {exc}") from None
        return decode_yolo(
            np.asarray(output), lb, num_classes=self.num_classes,
            conf_threshold=self.conf_threshold, iou_threshold=self.iou_threshold,
            max_detections=self.max_detections, class_names=self.class_names,
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in ``image`` (RGB uint8) pixels, best score first."""
        check_image(image)
        return self.infer(self.preprocess(image), image.shape)
