"""The pick network: a small MLP, its numpy forward pass, and its ONNX form.

Input (one row per observation, all float32, robot base frame)::

    observation/joint_position   [B, 5]  arm joint positions (rad)
    observation/gripper_position [B, 1]  gripper opening, 0 open .. 1 closed
    observation/target_position  [B, 3]  perceived centre of the named object (m, base frame)
    observation/object_onehot    [B, K]  which object the instruction names (``object_names``)

Output ``actions`` [B, H, 6]: for the next H policy ticks (``rate_hz``), 5 arm joint-position
targets (rad, absolute) and a gripper command (0 open .. 1 closed).

Graph: Concat -> Sub(mean) -> Div(std) -> Gemm -> Relu -> Gemm -> Relu -> Gemm -> Mul(std) ->
Add(mean) -> Add(current joint positions, tiled over the horizon: the net predicts offsets from
where the arm is) -> Max/Min (joint limits, gripper [0, 1]) -> Reshape. Every normalisation
constant is in the graph; ``metadata_props`` carry ``action_dim``, ``horizon``, ``rate_hz``,
``input_names`` (JSON, in order), ``input_dims``, ``output_name``, ``action_layout``,
``joint_names``, ``object_names``, ``carry_q``, ``frame`` and ``format``, and the ``rtvla.*``
keys that :class:`rtvla.policy.OnnxPolicy` reads (``rtvla.name``, ``rtvla.action_dim``,
``rtvla.horizon``, ``rtvla.rate_hz``, ``rtvla.output``, ``rtvla.action``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.errors import PolicyError, PolicyOutputError

__all__ = [
    "ACTION_DIM",
    "INPUT_NAMES",
    "MODEL_FORMAT",
    "OUTPUT_NAME",
    "OnnxPickModel",
    "PickNet",
    "read_metadata",
]

logger = logging.getLogger(__name__)

MODEL_FORMAT = "rtvla.pick_mlp/1"
INPUT_NAMES = (
    "observation/joint_position",
    "observation/gripper_position",
    "observation/target_position",
    "observation/object_onehot",
)
OUTPUT_NAME = "actions"
ACTION_DIM = 6
_OPSET = 17


@dataclass
class PickNet:
    """Weights and constants of the pick MLP (float32). ``layers``: [(W [in, out], b [out])]."""

    layers: list[tuple[np.ndarray, np.ndarray]]
    in_mean: np.ndarray
    in_std: np.ndarray
    out_mean: np.ndarray
    out_std: np.ndarray
    horizon: int
    q_min: np.ndarray
    q_max: np.ndarray
    rate_hz: float = 10.0
    joint_names: Sequence[str] = ()
    object_names: Sequence[str] = ()
    carry_q: Sequence[float] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def dof(self) -> int:
        return len(self.q_min)

    @property
    def input_dims(self) -> tuple[int, ...]:
        return (self.dof, 1, 3, len(self.object_names))

    def features(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The concatenated input rows [B, sum(input_dims)] of an observation dict."""
        parts = []
        for name, dim in zip(INPUT_NAMES, self.input_dims):
            if name not in obs:
                raise PolicyError(f"pick policy observation lacks {name!r}; it needs {list(INPUT_NAMES)}")
            a = np.asarray(obs[name], dtype=np.float32)
            a = a.reshape(1, -1) if a.ndim <= 1 else a
            if a.ndim != 2 or a.shape[1] != dim:
                raise PolicyError(f"{name} must have shape [B, {dim}], got {np.shape(obs[name])}")
            parts.append(a)
        if len({p.shape[0] for p in parts}) != 1:
            raise PolicyError(f"observation batch sizes differ: {[p.shape[0] for p in parts]}")
        return np.concatenate(parts, axis=1)

    def hidden(self, x: np.ndarray) -> np.ndarray:
        """The normalised network output [B, H*A] for input rows ``x`` (before de-normalising)."""
        h = ((x - self.in_mean) / self.in_std).astype(np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def residual_matrix(self) -> np.ndarray:
        """[in, H*A]: copies the current joint positions into every horizon step's arm slots."""
        n_in = sum(self.input_dims)
        r = np.zeros((n_in, self.horizon * ACTION_DIM), dtype=np.float32)
        for k in range(self.horizon):
            for j in range(self.dof):
                r[j, k * ACTION_DIM + j] = 1.0
        return r

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.tile(np.append(self.q_min, 0.0), self.horizon).astype(np.float32)
        hi = np.tile(np.append(self.q_max, 1.0), self.horizon).astype(np.float32)
        return lo, hi

    def forward_rows(self, x: np.ndarray) -> np.ndarray:
        """Actions [B, H, A] for input rows ``x`` [B, in] (the numpy twin of the ONNX graph)."""
        x = np.asarray(x, dtype=np.float32)
        y = self.hidden(x) * self.out_std + self.out_mean + x @ self.residual_matrix()
        lo, hi = self.bounds()
        y = np.minimum(np.maximum(y, lo), hi)
        return y.reshape(-1, self.horizon, ACTION_DIM)

    def forward(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Actions [B, H, A] for an observation dict (keys :data:`INPUT_NAMES`)."""
        return self.forward_rows(self.features(obs))

    # -- ONNX --------------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        meta = {
            "format": MODEL_FORMAT,
            "action_dim": str(ACTION_DIM),
            "horizon": str(self.horizon),
            "rate_hz": repr(float(self.rate_hz)),
            "input_names": json.dumps(list(INPUT_NAMES)),
            "input_dims": json.dumps(list(self.input_dims)),
            "output_name": OUTPUT_NAME,
            "action_layout": json.dumps([f"joint_position:{n}" for n in self.joint_names] + ["gripper"]),
            "joint_names": json.dumps(list(self.joint_names)),
            "object_names": json.dumps(list(self.object_names)),
            "carry_q": json.dumps([float(v) for v in self.carry_q]),
            "frame": "base",
            # The keys rtvla.policy.OnnxPolicy reads (rtvla policy info / serve-policy).
            "rtvla.name": "pick",
            "rtvla.action_dim": str(ACTION_DIM),
            "rtvla.horizon": str(self.horizon),
            "rtvla.rate_hz": repr(float(self.rate_hz)),
            "rtvla.output": OUTPUT_NAME,
            "rtvla.action": json.dumps({"slice": [
                {"kind": "joint_position", "start": 0, "size": self.dof},
                {"kind": "gripper", "start": self.dof, "threshold": 0.5}]}),
        }
        meta.update(self.extra)
        return meta

    def to_onnx(self) -> Any:
        """The network as an ``onnx.ModelProto`` (checked)."""
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        def const(name: str, arr: np.ndarray) -> Any:
            return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)

        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", d])
                  for n, d in zip(INPUT_NAMES, self.input_dims)]
        output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                               ["batch", self.horizon, ACTION_DIM])
        lo, hi = self.bounds()
        inits = [const("in_mean", self.in_mean), const("in_std", self.in_std),
                 const("out_mean", self.out_mean), const("out_std", self.out_std),
                 const("residual", self.residual_matrix()), const("lo", lo), const("hi", hi),
                 numpy_helper.from_array(np.array([-1, self.horizon, ACTION_DIM], np.int64), "shape")]
        nodes = [helper.make_node("Concat", list(INPUT_NAMES), ["x"], axis=1),
                 helper.make_node("Sub", ["x", "in_mean"], ["x_c"]),
                 helper.make_node("Div", ["x_c", "in_std"], ["h0"])]
        h = "h0"
        for i, (w, b) in enumerate(self.layers):
            inits += [const(f"W{i}", w), const(f"b{i}", b)]
            out = f"z{i}"
            nodes.append(helper.make_node("Gemm", [h, f"W{i}", f"b{i}"], [out]))
            if i < len(self.layers) - 1:
                nodes.append(helper.make_node("Relu", [out], [f"h{i + 1}"]))
                h = f"h{i + 1}"
            else:
                h = out
        nodes += [helper.make_node("Mul", [h, "out_std"], ["y_s"]),
                  helper.make_node("Add", ["y_s", "out_mean"], ["delta"]),
                  helper.make_node("MatMul", ["x", "residual"], ["base"]),
                  helper.make_node("Add", ["delta", "base"], ["y"]),
                  helper.make_node("Max", ["y", "lo"], ["y_lo"]),
                  helper.make_node("Min", ["y_lo", "hi"], ["y_hi"]),
                  helper.make_node("Reshape", ["y_hi", "shape"], [OUTPUT_NAME])]
        graph = helper.make_graph(nodes, "rtvla_pick_mlp", inputs, [output], initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                                  producer_name="rtvla", doc_string=__doc__.splitlines()[0])
        model.ir_version = 8  # readable by onnxruntime >= 1.14
        helper.set_model_props(model, self.metadata())
        onnx.checker.check_model(model)
        return model

    def save_onnx(self, path: str | Path) -> Path:
        import onnx

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(self.to_onnx(), str(out))
        return out

    @classmethod
    def from_onnx(cls, path: str | Path) -> PickNet:
        """Read the weights back from a file written by :meth:`save_onnx` (for tests and
        for comparing onnxruntime against the numpy forward pass)."""
        import onnx
        from onnx import numpy_helper

        model = onnx.load_model(str(path))
        meta = {p.key: p.value for p in model.metadata_props}
        if meta.get("format") != MODEL_FORMAT:
            raise PolicyError(f"{path}: not a pick model (format {meta.get('format')!r})")
        w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        layers = []
        i = 0
        while f"W{i}" in w:
            layers.append((w[f"W{i}"], w[f"b{i}"]))
            i += 1
        horizon = int(meta["horizon"])
        lo, hi = w["lo"][: ACTION_DIM], w["hi"][: ACTION_DIM]
        known = {"format", "action_dim", "horizon", "rate_hz", "input_names", "input_dims", "output_name",
                 "action_layout", "joint_names", "object_names", "carry_q", "frame"}
        known |= {k for k in meta if k.startswith("rtvla.")}
        return cls(layers=layers, in_mean=w["in_mean"], in_std=w["in_std"], out_mean=w["out_mean"],
                   out_std=w["out_std"], horizon=horizon, q_min=lo[:-1].copy(), q_max=hi[:-1].copy(),
                   rate_hz=float(meta["rate_hz"]), joint_names=json.loads(meta["joint_names"]),
                   object_names=json.loads(meta["object_names"]), carry_q=json.loads(meta["carry_q"]),
                   extra={k: v for k, v in meta.items() if k not in known})


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The pick model's metadata, decoded (JSON fields parsed, numbers as numbers)."""
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a bad file
        raise PolicyError(f"{path}: not a readable ONNX model: {exc}") from None
    raw = {p.key: p.value for p in model.metadata_props}
    if raw.get("format") != MODEL_FORMAT:
        raise PolicyError(f"{path}: not a pick model (metadata format {raw.get('format')!r})")
    out: dict[str, Any] = dict(raw)
    for k in ("input_names", "input_dims", "action_layout", "joint_names", "object_names", "carry_q"):
        out[k] = json.loads(raw[k])
    out["action_dim"] = int(raw["action_dim"])
    out["horizon"] = int(raw["horizon"])
    out["rate_hz"] = float(raw["rate_hz"])
    return out


class OnnxPickModel:
    """The pick model through onnxruntime (CPU): ``infer(observation) -> {"actions": [H, 6]}``.

    ``observation`` maps :data:`INPUT_NAMES` to arrays of one observation (no batch axis)
    or a batch; the answer drops the batch axis when one observation was given.
    """

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        opts = ort.SessionOptions()
        # One small MLP: more threads only add wake-up jitter on a shared machine.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise PolicyError(f"{self.path}: onnxruntime cannot load it: {exc}") from None
        self.input_names = tuple(self.metadata["input_names"])
        self.input_dims = tuple(self.metadata["input_dims"])
        self.horizon = int(self.metadata["horizon"])
        self.action_dim = int(self.metadata["action_dim"])

    def infer(self, observation: Mapping[str, Any]) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {}
        single = True
        for name, dim in zip(self.input_names, self.input_dims):
            if name not in observation:
                raise PolicyError(f"pick policy observation lacks {name!r}; it needs {list(self.input_names)}")
            a = np.asarray(observation[name], dtype=np.float32)
            if a.ndim == 2:
                single = False
            a = a.reshape(1, -1) if a.ndim <= 1 else a
            if a.shape[1] != dim:
                raise PolicyError(f"{name} must have {dim} values per row, got shape {a.shape}")
            feeds[name] = a
        (actions,) = self.session.run([OUTPUT_NAME], feeds)
        if actions.shape[1:] != (self.horizon, self.action_dim) or not np.all(np.isfinite(actions)):
            raise PolicyOutputError(
                f"{self.path}: actions must be finite with shape [B, {self.horizon}, {self.action_dim}], "
                f"got {actions.shape}")
        return {"actions": actions[0] if single else actions}
