"""A real openpi-protocol policy server on 127.0.0.1 that misbehaves on script, and a tiny
real ONNX policy to serve, for tests (rtvla's and users').

:class:`ScriptedPolicyServer` is :class:`~rtvla.policy.server.PolicyServer` (same
handshake, codec, timing and API key); each request takes the next scripted
:class:`Behaviour`: answer normally, fail (the server's own error path: traceback as a text
frame, close 1011), answer late, drop the connection without a close frame, or corrupt the
actions (wrong shape, NaN). :func:`build_linear_policy` writes an ONNX model with
``onnx.helper``: ``actions = reshape(state @ W + b + mean(image) * c, [1, H, A])``.

Usage::

    path = build_linear_policy(tmp_path / "p.onnx", state_dim=8, horizon=10, action_dim=7)
    with ScriptedPolicyServer(OnnxPolicy(path)) as server:
        server.script(Behaviour.slow(0.5), Behaviour.error("boom"))
        client = WebsocketPolicy(server.url, timeout_s=0.2)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.errors import PolicyError
from rtvla.policy.server import PolicyServer

__all__ = ["Behaviour", "ScriptedPolicyServer", "build_linear_policy"]

logger = logging.getLogger(__name__)

_KINDS = ("ok", "error", "slow", "drop", "bad_shape", "nan")


@dataclass(frozen=True)
class Behaviour:
    """What the server does with one request."""

    kind: str = "ok"
    delay_s: float = 0.0
    message: str = "scripted failure"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Behaviour.kind must be one of {_KINDS}, got {self.kind!r}")
        if self.delay_s < 0:
            raise ValueError(f"Behaviour.delay_s must be >= 0, got {self.delay_s}")

    @classmethod
    def ok(cls) -> Behaviour:
        return cls("ok")

    @classmethod
    def error(cls, message: str = "scripted failure") -> Behaviour:
        return cls("error", message=message)

    @classmethod
    def slow(cls, delay_s: float) -> Behaviour:
        return cls("slow", delay_s=delay_s)

    @classmethod
    def drop(cls) -> Behaviour:
        """Abort the TCP connection mid-request (a server that died)."""
        return cls("drop")

    @classmethod
    def bad_shape(cls) -> Behaviour:
        """Answer with the chunk's last row cut off."""
        return cls("bad_shape")

    @classmethod
    def nan(cls) -> Behaviour:
        return cls("nan")


class ScriptedPolicyServer(PolicyServer):
    """A :class:`PolicyServer` whose answers follow a script (then ``default``)."""

    def __init__(self, policy: Any, *, default: Behaviour | None = None, **kwargs: Any) -> None:
        super().__init__(policy, **kwargs)
        self.default = default or Behaviour.ok()
        self._script: deque[Behaviour] = deque()
        self.seen: list[dict[str, Any]] = []

    def script(self, *behaviours: Behaviour) -> None:
        self._script.extend(behaviours)

    async def _answer(self, websocket: Any, obs: Any, index: int) -> dict[str, Any]:
        self.seen.append(obs)
        b = self._script.popleft() if self._script else self.default
        if b.kind == "error":
            raise PolicyError(b.message)
        if b.kind == "drop":
            from websockets.exceptions import ConnectionClosedError

            websocket.transport.abort()
            await websocket.wait_closed()
            raise ConnectionClosedError(None, None)
        if b.kind == "slow":
            await asyncio.sleep(b.delay_s)  # a server that answers late, on purpose
        out = await super()._answer(websocket, obs, index)
        if b.kind == "bad_shape":
            out["actions"] = np.ascontiguousarray(out["actions"][:-1])
        elif b.kind == "nan":
            a = np.array(out["actions"], dtype=np.float32)
            a[0, 0] = np.nan
            out["actions"] = a
        return out


def build_linear_policy(path: str | Path, *, state_dim: int = 8, horizon: int = 10, action_dim: int = 7,
                        image: tuple[int, int] | None = None, rate_hz: float | None = 10.0,
                        seed: int = 0, state_key: str | list[str] = "observation/state",
                        image_key: str | list[str] = "observation/image",
                        metadata: dict[str, str] | None = None) -> Path:
    """Write a small, real ONNX policy: a linear map from state (and an image's mean) to a
    ``[1, horizon, action_dim]`` chunk. Inputs ``state`` ``[1, state_dim]`` float32 and,
    with ``image=(h, w)``, ``image`` ``[1, h, w, 3]`` uint8; metadata declares the keys."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n = horizon * action_dim
    w = (rng.standard_normal((state_dim, n)) * 0.05).astype(np.float32)
    b = (rng.standard_normal(n) * 0.05).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
             numpy_helper.from_array(np.array([1, horizon, action_dim], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["state", "W"], ["sw"]), helper.make_node("Add", ["sw", "B"], ["flat"])]
    inputs = [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, state_dim])]
    in_map: dict[str, Any] = {"state": state_key}
    last = "flat"
    if image is not None:
        inputs.append(helper.make_tensor_value_info("image", TensorProto.UINT8, [1, image[0], image[1], 3]))
        in_map["image"] = image_key
        inits.append(numpy_helper.from_array(np.array([1.0 / 255.0 * 0.01], np.float32), "C"))
        nodes += [helper.make_node("Cast", ["image"], ["imgf"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceMean", ["imgf"], ["imgm"], keepdims=0),
                  helper.make_node("Mul", ["imgm", "C"], ["imgc"]),
                  helper.make_node("Add", ["flat", "imgc"], ["flat2"])]
        last = "flat2"
    nodes.append(helper.make_node("Reshape", [last, "shape"], ["actions"]))
    graph = helper.make_graph(nodes, "linear_policy", inputs,
                              [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, horizon, action_dim])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {"rtvla.inputs": json.dumps(in_map), "rtvla.name": Path(path).stem}
    if rate_hz is not None:
        props["rtvla.rate_hz"] = str(rate_hz)
    props.update(metadata or {})
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(p))
    return p
