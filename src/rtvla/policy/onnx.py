"""A policy in an ONNX file, run with ONNX Runtime (CUDA when available, else CPU).

The model's inputs are observation entries, its first output (or ``rtvla.output``) the
chunk, ``[1, H, A]`` or ``[H, A]``. A leading batch axis of 1 is added to inputs and removed
from the output where the model's shapes say so; inputs are cast to the model's element type
(a model that takes float images normalizes them itself). A ``tensor(string)`` input takes
the prompt.

What the policy is comes from the model's custom metadata (``metadata_props``); options
given to :class:`OnnxPolicy` override it:

=========================  ==========================================================
key                        value
=========================  ==========================================================
``rtvla.action_dim``       int (default: the output's last static dimension)
``rtvla.horizon``          int (default: the output's static horizon dimension)
``rtvla.rate_hz``          float, the rate the actions are meant to be executed at
``rtvla.inputs``           JSON object: ONNX input name -> observation key (a string,
                           or a list for a nested key); default: the input's own name
``rtvla.output``           name of the actions output (default: the first output)
``rtvla.capabilities``     JSON list of capability names
``rtvla.observation``      JSON ``[policy.observation]`` table or a preset name
``rtvla.action``           JSON ``[policy.action]`` table
``rtvla.name``             the policy's name (default: the file's stem)
=========================  ==========================================================

Usage::

    policy = OnnxPolicy("pick.onnx")                       # metadata from the file
    out = policy.infer({"state": np.zeros(8, np.float32)})  # {"actions": [H, A], "policy_timing": ...}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rtvla.errors import ConfigError, PolicyError, PolicyOutputError
from rtvla.policy.base import KeyPath, ObservationSpec, PolicyMetadata, get_path, key_path, key_text
from rtvla.timing import MONOTONIC, Clock

__all__ = ["META_KEYS", "OnnxOptions", "OnnxPolicy", "default_providers"]

logger = logging.getLogger(__name__)

#: The custom metadata keys read from an ONNX policy (see the module docstring).
META_KEYS = ("rtvla.action_dim", "rtvla.horizon", "rtvla.rate_hz", "rtvla.inputs", "rtvla.output",
             "rtvla.capabilities", "rtvla.observation", "rtvla.action", "rtvla.name")

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int16)": "int16",
    "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool",
    "tensor(string)": "str",
}


class OnnxOptions(BaseModel):
    """Options of an ONNX policy (``[policy.options]``); each overrides the model's metadata."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    action_dim: int | None = Field(default=None, gt=0)
    horizon: int | None = Field(default=None, gt=0)
    rate_hz: float | None = Field(default=None, gt=0)
    inputs: dict[str, str | list[str]] | None = None
    output: str | None = None
    providers: list[str] | None = Field(default=None, description="default: CUDA if available, CPU")
    threads: int = Field(default=1, ge=1, le=64)


def default_providers() -> list[str]:
    """``["CUDAExecutionProvider", "CPUExecutionProvider"]`` where CUDA is available, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _json(meta: Mapping[str, str], key: str, path: Path) -> Any:
    raw = meta.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if key == "rtvla.observation":  # a bare preset name
            return raw
        raise PolicyError(f"ONNX policy {path}: metadata {key} is not JSON: {raw[:80]!r}") from None


def _number(meta: Mapping[str, str], key: str, path: Path, kind: type) -> Any:
    raw = meta.get(key)
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise PolicyError(f"ONNX policy {path}: metadata {key} must be a {kind.__name__}, got {raw!r}") from None


class OnnxPolicy:
    """See the module docstring. ``providers``: ONNX Runtime execution providers (default:
    :func:`default_providers`); ``threads``: intra-op threads."""

    Options = OnnxOptions

    def __init__(self, path: str | Path, *, action_dim: int | None = None, horizon: int | None = None,
                 rate_hz: float | None = None, inputs: Mapping[str, str | list[str]] | None = None,
                 output: str | None = None, providers: Sequence[str] | None = None, threads: int = 1,
                 clock: Clock = MONOTONIC) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.clock = clock
        if not self.path.is_file():
            raise ConfigError(f"policy.options.path: ONNX file not found: {self.path}")
        if threads < 1:
            raise ConfigError(f"policy.options.threads must be >= 1, got {threads}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.providers = list(providers) if providers is not None else default_providers()
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise PolicyError(f"cannot load ONNX policy {self.path}: {exc}") from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map or {})
        self.model_metadata = meta
        p = self.path
        outputs = self.session.get_outputs()
        out_name = output or meta.get("rtvla.output") or outputs[0].name
        found = next((o for o in outputs if o.name == out_name), None)
        if found is None:
            raise PolicyError(f"ONNX policy {p}: no output {out_name!r}; outputs: {[o.name for o in outputs]}")
        self.output_name = out_name
        out_shape = list(found.shape)
        if len(out_shape) not in (2, 3) or (len(out_shape) == 3 and isinstance(out_shape[0], int)
                                            and out_shape[0] != 1):
            raise PolicyError(f"ONNX policy {p}: output {out_name!r} has shape {out_shape}; expected "
                              "[1, horizon, action_dim] or [horizon, action_dim]")
        static = [d if isinstance(d, int) else None for d in out_shape[-2:]]
        in_map = dict(_json(meta, "rtvla.inputs", p) or {})
        in_map.update(dict(inputs or {}))
        self._inputs: list[tuple[str, KeyPath, str, list[Any]]] = []
        specs = []
        model_inputs = self.session.get_inputs()
        for name in in_map:
            if name not in {i.name for i in model_inputs}:
                raise ConfigError(f"policy.options.inputs: the model has no input {name!r}; "
                                  f"inputs: {[i.name for i in model_inputs]}")
        for inp in model_inputs:
            dtype = _ORT_TYPES.get(inp.type)
            if dtype is None:
                raise PolicyError(f"ONNX policy {p}: input {inp.name!r} has unsupported type {inp.type}")
            key = key_path(in_map.get(inp.name, inp.name))
            shape = list(inp.shape)
            self._inputs.append((inp.name, key, dtype, shape))
            # A leading 1 or symbolic axis of a rank >= 2 input is the batch axis.
            batched = len(shape) >= 2 and (shape[0] == 1 or not isinstance(shape[0], int))
            obs_shape = shape[1:] if batched else shape
            if dtype == "str":
                specs.append(ObservationSpec(key=key, dtype="str"))
            elif all(isinstance(d, int) for d in obs_shape):
                specs.append(ObservationSpec(key=key, shape=tuple(obs_shape), dtype=dtype))
            else:
                specs.append(ObservationSpec(key=key, shape=(), dtype=dtype))
        caps = _json(meta, "rtvla.capabilities", p) or []
        obs_map = _json(meta, "rtvla.observation", p)
        act_map = _json(meta, "rtvla.action", p)
        try:
            self._metadata = PolicyMetadata(
                name=meta.get("rtvla.name", p.stem),
                action_dim=action_dim or _number(meta, "rtvla.action_dim", p, int) or static[1],
                horizon=horizon or _number(meta, "rtvla.horizon", p, int) or static[0],
                rate_hz=rate_hz or _number(meta, "rtvla.rate_hz", p, float),
                observation=tuple(specs),
                capabilities=frozenset(str(c) for c in caps),
                observation_mapping={"preset": obs_map} if isinstance(obs_map, str) else obs_map,
                action_mapping=act_map,
                extra={"onnx": str(p.name), "providers": self.session.get_providers()},
            )
        except ValueError as exc:
            raise PolicyError(f"ONNX policy {p}: bad metadata: {exc}") from None
        for want, have, what in ((self._metadata.horizon, static[0], "horizon"),
                                 (self._metadata.action_dim, static[1], "action_dim")):
            if want is not None and have is not None and want != have:
                logger.warning("ONNX policy %s: %s is %s by metadata/options but the output's shape "
                               "says %s; its chunks will be rejected", p, what, want, have)
        self._batched_out = len(out_shape) == 3

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def _feed(self, observation: Mapping[str, Any]) -> dict[str, np.ndarray]:
        feed: dict[str, np.ndarray] = {}
        for name, key, dtype, shape in self._inputs:
            try:
                value = get_path(observation, key)
            except KeyError:
                raise PolicyError(f"ONNX policy {self.path.name}: the observation has no {key_text(key)!r} "
                                  f"(input {name!r}); keys: {sorted(map(str, observation))}") from None
            if dtype == "str":
                arr = np.asarray(value, dtype=object)
            else:
                arr = np.asarray(value)
                if arr.dtype.kind not in "fiub":
                    raise PolicyError(f"ONNX policy {self.path.name}: {key_text(key)!r} has dtype {arr.dtype}; "
                                      f"input {name!r} takes {dtype}")
                arr = arr.astype(dtype, copy=False)
            if arr.ndim == len(shape) - 1:
                arr = arr[None]
            if arr.ndim != len(shape) or any(isinstance(d, int) and d != n for d, n in zip(shape, arr.shape)):
                raise PolicyError(f"ONNX policy {self.path.name}: {key_text(key)!r} has shape "
                                  f"{np.asarray(value).shape}; input {name!r} takes {shape}")
            feed[name] = arr
        return feed

    def infer(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        """``{"actions": [H, A], "policy_timing": {"infer_ms": ...}}``."""
        feed = self._feed(observation)
        t0 = self.clock.now_ns()
        try:
            out = self.session.run([self.output_name], feed)[0]
        except Exception as exc:  # onnxruntime's own error types
            raise PolicyError(f"ONNX policy {self.path.name} failed to run: {exc}") from None
        infer_ms = (self.clock.now_ns() - t0) / 1e6
        actions = np.asarray(out)
        if self._batched_out:
            if actions.shape[0] != 1:
                raise PolicyOutputError(f"ONNX policy {self.path.name}: output batch of {actions.shape[0]}, expected 1")
            actions = actions[0]
        return {"actions": actions, "policy_timing": {"infer_ms": infer_ms}}

    def close(self) -> None:
        """Release the session (ONNX Runtime frees it with the object)."""
        self.session = None  # type: ignore[assignment]

    def __enter__(self) -> OnnxPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OnnxPolicy({str(self.path)!r}, providers={self.providers})"
