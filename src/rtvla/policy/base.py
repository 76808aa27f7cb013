"""The ``Policy`` protocol, its metadata, and the check every policy output passes.

A policy maps an observation (a dict of numpy arrays and strings, nested dicts allowed, as
openpi's servers take them) to a chunk of future actions::

    out = policy.infer({"observation/state": state, "prompt": "pick up the red cube"})
    actions = check_output(out, policy.metadata)        # [H, A] float64, finite

:class:`PolicyMetadata` says what the policy produces (``action_dim``, ``horizon``,
``rate_hz``), which observation keys it expects (``observation``: key paths with shape and
dtype) and what it can do (``capabilities``, e.g. ``"real_time_chunking"``). A value that a
backend cannot know (an openpi server's metadata is free-form and often empty) is None until
an option or the first chunk settles it.

Observation keys are *paths*: openpi's LIBERO/DROID layouts use flat keys that contain a
slash (``("observation/image",)``), ALOHA's uses a nested dict (``("images", "cam_high")``).
:func:`key_text` shows both as ``observation/image`` and ``images/cam_high``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rtvla.errors import PolicyError, PolicyOutputError
from rtvla.timing import MONOTONIC, Clock

__all__ = [
    "REAL_TIME_CHUNKING",
    "RTC_DELAY_KEY",
    "RTC_LEFTOVER_KEY",
    "Chunk",
    "KeyPath",
    "ObservationSpec",
    "Policy",
    "PolicyMetadata",
    "check_output",
    "get_path",
    "infer_chunk",
    "key_path",
    "key_text",
    "set_path",
    "with_real_time_chunking",
]

logger = logging.getLogger(__name__)

#: Capability: the policy accepts the not-yet-executed rest of the previous chunk and the
#: inference delay in ticks (Black et al. 2025) with each request.
REAL_TIME_CHUNKING = "real_time_chunking"
#: Request keys of a real-time-chunking request (LeRobot's RTC argument names): the
#: not-yet-executed rest of the previous chunk ``[k, A]`` and the delay in policy steps.
RTC_LEFTOVER_KEY = "prev_chunk_left_over"
RTC_DELAY_KEY = "inference_delay"

KeyPath = tuple[str, ...]


def key_path(key: str | list[str] | tuple[str, ...]) -> KeyPath:
    """A key path from a flat key (``"observation/image"``) or a list of nested keys."""
    if isinstance(key, str):
        path: tuple[Any, ...] = (key,)
    elif isinstance(key, (list, tuple)):
        path = tuple(key)
    else:
        raise PolicyError(f"an observation key is a string or a list of strings, got {key!r}")
    if not path or not all(isinstance(p, str) and p for p in path):
        raise PolicyError(f"an observation key needs non-empty string parts, got {key!r}")
    return path


def key_text(path: KeyPath) -> str:
    return "/".join(path)


def get_path(obs: Mapping[str, Any], path: KeyPath) -> Any:
    """The value at ``path``; :class:`KeyError` naming the key when it is absent."""
    node: Any = obs
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(key_text(path))
        node = node[part]
    return node


def set_path(obs: dict[str, Any], path: KeyPath, value: Any) -> None:
    node = obs
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise PolicyError(f"observation key {key_text(path)!r} nests under {part!r}, "
                              "which already holds a value")
        node = child
    node[path[-1]] = value


class ObservationSpec(BaseModel):
    """One observation entry a policy expects: its key path, shape and dtype."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: KeyPath
    shape: tuple[int, ...] = ()
    dtype: str = "float32"  # a numpy dtype name, or "str" for text such as the prompt

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, v: Any) -> KeyPath:
        return key_path(v)

    @property
    def text(self) -> str:
        return key_text(self.key)

    def zeros(self) -> Any:
        """A placeholder value of this shape and dtype (``""`` for text)."""
        if self.dtype == "str":
            return ""
        return np.zeros(self.shape, dtype=np.dtype(self.dtype))


class PolicyMetadata(BaseModel):
    """What a policy produces and expects. See the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "policy"
    action_dim: int | None = Field(default=None, gt=0)
    horizon: int | None = Field(default=None, gt=0)
    rate_hz: float | None = Field(default=None, gt=0)
    observation: tuple[ObservationSpec, ...] = ()
    capabilities: frozenset[str] = frozenset()
    #: Raw ``[policy.observation]`` / ``[policy.action]`` tables the policy ships with
    #: (validated by ObservationMapping / ActionMapping where used).
    observation_mapping: dict[str, Any] | None = None
    action_mapping: dict[str, Any] | None = None
    #: Everything else the source said (an openpi server's metadata as sent, e.g. reset_pose).
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def real_time_chunking(self) -> bool:
        return REAL_TIME_CHUNKING in self.capabilities

    def spec(self, key: str | KeyPath) -> ObservationSpec | None:
        path = key_path(key)
        return next((s for s in self.observation if s.key == path), None)

    def with_overrides(self, **values: Any) -> PolicyMetadata:
        """A copy with the non-None ``values`` replacing fields (options beat the source)."""
        update = {k: v for k, v in values.items() if v is not None}
        if not update:
            return self
        return PolicyMetadata.model_validate({**self.model_dump(), **update})

    def to_wire(self) -> dict[str, Any]:
        """The metadata an openpi-protocol server sends first: rtvla's keys plus ``extra``."""
        out: dict[str, Any] = dict(self.extra)
        out.update({
            "name": self.name,
            "action_dim": self.action_dim,
            "action_horizon": self.horizon,
            "rate_hz": self.rate_hz,
            "observation_spec": [
                {"key": list(s.key), "shape": list(s.shape), "dtype": s.dtype} for s in self.observation
            ],
            "capabilities": sorted(self.capabilities),
        })
        if self.observation_mapping is not None:
            out["observation_mapping"] = self.observation_mapping
        if self.action_mapping is not None:
            out["action_mapping"] = self.action_mapping
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any], *, name: str = "policy") -> PolicyMetadata:
        """Read a server's metadata: rtvla's keys where present, the rest kept in ``extra``.

        openpi servers send whatever their training config says (often ``{}`` or
        ``{"reset_pose": [...]}``), so every rtvla key is optional.
        """
        if not isinstance(data, Mapping):
            raise PolicyError(f"policy metadata must be a map, got {type(data).__name__}")
        known = {"name", "action_dim", "action_horizon", "horizon", "rate_hz", "observation_spec",
                 "capabilities", "observation_mapping", "action_mapping", "real_time_chunking"}
        caps = data.get("capabilities") or []
        if isinstance(caps, Mapping):  # {"real_time_chunking": true} is accepted too
            caps = [k for k, v in caps.items() if v]
        caps = set(caps)
        if data.get("real_time_chunking"):
            caps.add(REAL_TIME_CHUNKING)
        try:
            return cls(
                name=str(data.get("name", name)),
                action_dim=data.get("action_dim"),
                horizon=data.get("action_horizon", data.get("horizon")),
                rate_hz=data.get("rate_hz"),
                observation=tuple(ObservationSpec.model_validate(s)
                                  for s in data.get("observation_spec") or ()),
                capabilities=frozenset(str(c) for c in caps),
                observation_mapping=data.get("observation_mapping"),
                action_mapping=data.get("action_mapping"),
                extra={str(k): v for k, v in data.items() if k not in known},
            )
        except (ValueError, TypeError) as exc:
            raise PolicyError(f"policy metadata is malformed: {exc}") from None


@runtime_checkable
class Policy(Protocol):
    """Anything that turns an observation into a chunk of actions.

    ``infer`` returns a dict with ``"actions"`` (``[horizon, action_dim]``) and any other
    entries the backend adds (``policy_timing``, ``server_timing``). It may block for the
    inference time: it never runs on the control loop's thread.
    """

    @property
    def metadata(self) -> PolicyMetadata: ...

    def infer(self, observation: Mapping[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


def check_output(output: Any, metadata: PolicyMetadata, *, source: str = "policy") -> np.ndarray:
    """The validated actions of ``output`` as a ``[H, A]`` float64 array.

    Raises :class:`PolicyOutputError` naming what is wrong: not a map, no ``actions``, a
    non-numeric dtype, the wrong number of dimensions, a horizon or action dimension other
    than the metadata's, or non-finite values (with the first bad index).
    """
    if not isinstance(output, Mapping):
        raise PolicyOutputError(f"{source}: output must be a map with 'actions', got {type(output).__name__}")
    if "actions" not in output:
        raise PolicyOutputError(f"{source}: output has no 'actions' (keys: {sorted(map(str, output))})")
    raw = output["actions"]
    if not isinstance(raw, np.ndarray):
        raise PolicyOutputError(f"{source}: actions must be a numpy array, got {type(raw).__name__}")
    if raw.dtype.kind not in "fiu":
        raise PolicyOutputError(f"{source}: actions have dtype {raw.dtype}; expected a float or integer dtype")
    if raw.ndim != 2:
        raise PolicyOutputError(f"{source}: actions have shape {raw.shape}; expected 2 dimensions "
                                "[horizon, action_dim]")
    h, a = raw.shape
    if metadata.horizon is not None and h != metadata.horizon:
        raise PolicyOutputError(f"{source}: actions have shape {raw.shape}; expected horizon "
                                f"{metadata.horizon} rows")
    if metadata.action_dim is not None and a != metadata.action_dim:
        raise PolicyOutputError(f"{source}: actions have shape {raw.shape}; expected action_dim "
                                f"{metadata.action_dim} columns")
    if h == 0 or a == 0:
        raise PolicyOutputError(f"{source}: actions have shape {raw.shape}; an empty chunk")
    actions = raw.astype(np.float64)
    finite = np.isfinite(actions)
    if not finite.all():
        r, c = (int(i) for i in np.argwhere(~finite)[0])
        raise PolicyOutputError(f"{source}: actions are not finite: actions[{r}, {c}] = {actions[r, c]} "
                                f"({int((~finite).sum())} non-finite values)")
    return actions


@dataclass(frozen=True)
class Chunk:
    """One validated chunk with when it was asked for and when it came back."""

    actions: np.ndarray  # [H, A] float64
    sent_ns: int
    received_ns: int
    info: dict[str, Any] = field(default_factory=dict)  # the output's other keys

    @property
    def round_trip_s(self) -> float:
        return (self.received_ns - self.sent_ns) / 1e9


def infer_chunk(policy: Policy, observation: Mapping[str, Any], *, clock: Clock = MONOTONIC,
                source: str | None = None) -> Chunk:
    """Run one inference and validate it: the one call a consumer needs."""
    sent = clock.now_ns()
    out = policy.infer(observation)
    received = clock.now_ns()
    meta = policy.metadata
    actions = check_output(out, meta, source=source or meta.name)
    info = {k: v for k, v in out.items() if k != "actions"}
    return Chunk(actions, sent, received, info)


def with_real_time_chunking(observation: Mapping[str, Any], metadata: PolicyMetadata,
                            leftover: np.ndarray | None, delay_steps: int) -> dict[str, Any]:
    """``observation`` plus the real-time-chunking fields, only when the policy advertises
    the capability (a server that does not would choke on, or silently ignore, them)."""
    out = dict(observation)
    if not metadata.real_time_chunking:
        return out
    if delay_steps < 0:
        raise PolicyError(f"inference_delay must be >= 0 steps, got {delay_steps}")
    a = metadata.action_dim or (leftover.shape[1] if leftover is not None and leftover.ndim == 2 else 0)
    rest = np.zeros((0, a), np.float32) if leftover is None else np.asarray(leftover, np.float32)
    if rest.ndim != 2 or (metadata.action_dim is not None and rest.shape[1] != metadata.action_dim):
        raise PolicyError(f"prev_chunk_left_over must be [k, {metadata.action_dim}], got shape {rest.shape}")
    out[RTC_LEFTOVER_KEY] = rest
    out[RTC_DELAY_KEY] = int(delay_steps)
    return out
