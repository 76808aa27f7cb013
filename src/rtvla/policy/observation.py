"""Observation mapping: from a robot's state, its camera frames and the instruction to the
dict a policy expects, under the keys and shapes it was trained with.

A mapping is a config table (``[policy.observation]``) or a preset for openpi's example
layouts:

========  =====================================================================================
preset    keys (shapes; images uint8)
========  =====================================================================================
libero    ``observation/image`` (224x224x3), ``observation/wrist_image`` (224x224x3),
          ``observation/state`` (8, float32), ``prompt``
droid     ``observation/exterior_image_1_left`` (224x224x3), ``observation/wrist_image_left``
          (224x224x3), ``observation/joint_position`` (7), ``observation/gripper_position``
          (1), ``prompt``
aloha     ``state`` (14), ``images`` → {``cam_high``, ``cam_low``, ``cam_left_wrist``,
          ``cam_right_wrist``} (3x224x224, CHW), ``prompt``
========  =====================================================================================

The layouts are those of openpi's ``make_libero_example``, ``make_droid_example`` and
``make_aloha_example`` (and ``examples/*/main.py``); what fills a state vector is this
robot's state, zero-padded to the layout's size. Frames are resized with padding the way
``openpi_client.image_tools.resize_with_pad`` does (aspect kept, scaled size truncated,
zero padding, centred with the offset rounded down).

Example table::

    [policy.observation]
    preset = "droid"
    cameras = { exterior_image_1_left = "head", wrist_image_left = "wrist" }

    # or spelled out:
    [[policy.observation.camera]]
    key = "observation/image"   # a list (["images", "cam_high"]) nests
    camera = "head"
    height = 224
    width = 224
    layout = "hwc"
    [[policy.observation.state]]
    key = "observation/state"
    fields = ["joint_position", "gripper"]
    size = 8
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rtvla.config import format_validation_error
from rtvla.errors import ConfigError, PolicyError
from rtvla.policy.base import KeyPath, ObservationSpec, key_path, key_text, set_path
from rtvla.robots.base import RobotState

__all__ = [
    "PRESETS",
    "CameraInput",
    "ObservationMapping",
    "StateField",
    "StateInput",
    "preset",
    "resize_with_pad",
]

logger = logging.getLogger(__name__)

StateField = Literal["joint_position", "joint_velocity", "joint_effort", "gripper", "base_pose",
                     "base_velocity"]
_BASE_FIELDS = {"base_pose": 3, "base_velocity": 3, "gripper": 1}


def resize_with_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (HxWxC uint8) fitted into ``height`` x ``width``: aspect kept, zero padding.

    The same geometry as openpi's ``resize_with_pad`` (which replicates
    ``tf.image.resize_with_pad``); the resampling is OpenCV's (area when shrinking, bilinear
    when enlarging) instead of PIL's bilinear, so pixel values may differ slightly.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    ratio = max(w / width, h / height)
    rh, rw = max(1, int(h / ratio)), max(1, int(w / ratio))
    import cv2  # here, not at import: the control process imports this module and needs no cv2

    interp = cv2.INTER_AREA if ratio > 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (rw, rh), interpolation=interp)
    if resized.ndim == 2:  # cv2 drops a single channel axis
        resized = resized[:, :, None]
    out = np.zeros((height, width, image.shape[2]), dtype=image.dtype)
    top, left = max(0, int((height - rh) / 2)), max(0, int((width - rw) / 2))
    out[top:top + rh, left:left + rw] = resized
    return out


class CameraInput(BaseModel):
    """One camera frame in the observation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: KeyPath
    camera: str = Field(min_length=1, description="camera name in the frames given to build()")
    height: int = Field(default=224, gt=0, le=8192)
    width: int = Field(default=224, gt=0, le=8192)
    layout: Literal["hwc", "chw"] = "hwc"

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, v: Any) -> KeyPath:
        return key_path(v)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3) if self.layout == "hwc" else (3, self.height, self.width)

    def encode(self, frame: np.ndarray) -> np.ndarray:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            shape = getattr(frame, "shape", None)
            raise PolicyError(f"camera {self.camera!r} (for {key_text(self.key)!r}): a frame is HxWx3, "
                              f"got {type(frame).__name__} of shape {shape}")
        if frame.dtype != np.uint8:
            raise PolicyError(f"camera {self.camera!r} (for {key_text(self.key)!r}): frames are uint8, "
                              f"got {frame.dtype}")
        img = resize_with_pad(frame, self.height, self.width)
        if self.layout == "chw":
            img = img.transpose(2, 0, 1)
        return np.ascontiguousarray(img)


class StateInput(BaseModel):
    """State fields concatenated, in order, into one vector."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: KeyPath
    fields: tuple[StateField, ...] = Field(min_length=1)
    size: int | None = Field(default=None, gt=0, description="zero-pad to this length")
    dtype: Literal["float32", "float64"] = "float32"

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, v: Any) -> KeyPath:
        return key_path(v)

    def natural_size(self, dof: int) -> int:
        return sum(_BASE_FIELDS.get(f, dof) for f in self.fields)

    def encode(self, state: RobotState | None, dof: int | None) -> np.ndarray:
        if state is None:
            n = self.size if self.size is not None else (self.natural_size(dof) if dof else None)
            if n is None:
                raise PolicyError(f"state {key_text(self.key)!r}: no robot state and no size to make "
                                  "zeros of; set size or the arm's dof")
            return np.zeros(n, dtype=self.dtype)
        parts = []
        for f in self.fields:
            if f == "joint_position":
                parts.append(np.asarray(state.q, float).ravel())
            elif f == "joint_velocity":
                parts.append(np.asarray(state.dq, float).ravel())
            elif f == "joint_effort":
                parts.append(np.asarray(state.effort, float).ravel())
            elif f == "gripper":
                parts.append(np.array([state.gripper], float))
            elif f == "base_pose":
                parts.append(np.asarray(state.base_pose, float).ravel())
            else:
                parts.append(np.asarray(state.base_vel, float).ravel())
        vec = np.concatenate(parts)
        if self.size is not None:
            if vec.size > self.size:
                raise PolicyError(f"state {key_text(self.key)!r}: fields {list(self.fields)} give "
                                  f"{vec.size} values, more than size {self.size}")
            vec = np.pad(vec, (0, self.size - vec.size))
        return vec.astype(self.dtype)


class ObservationMapping(BaseModel):
    """How to build a policy's observation. See the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    camera: tuple[CameraInput, ...] = ()
    state: tuple[StateInput, ...] = ()
    prompt_key: KeyPath | None = ("prompt",)

    @field_validator("prompt_key", mode="before")
    @classmethod
    def _prompt(cls, v: Any) -> KeyPath | None:
        return None if v is None or v == "" else key_path(v)

    @model_validator(mode="after")
    def _unique(self) -> ObservationMapping:
        keys = [c.key for c in self.camera] + [s.key for s in self.state]
        if self.prompt_key is not None:
            keys.append(self.prompt_key)
        seen: set[KeyPath] = set()
        for k in keys:
            if k in seen:
                raise ValueError(f"observation key {key_text(k)!r} is mapped twice")
            seen.add(k)
        return self

    def _mapped_keys(self) -> set[KeyPath]:
        keys = {c.key for c in self.camera} | {s.key for s in self.state}
        return keys | ({self.prompt_key} if self.prompt_key is not None else set())

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | str | None, *, where: str = "policy.observation"
                   ) -> ObservationMapping:
        """Validate a ``[policy.observation]`` table, or a preset name. ``preset = "..."`` in
        the table starts from that preset; its ``cameras`` table renames the cameras."""
        if table is None:
            return cls()
        if isinstance(table, str):
            return preset(table)
        data = dict(table)
        name = data.pop("preset", None)
        cameras = data.pop("cameras", None)
        if name is not None:
            extra = set(data) - {"prompt_key"}
            if extra:
                raise ConfigError(f"{where}: with preset = {name!r} only 'cameras' and 'prompt_key' "
                                  f"may be set, got {sorted(extra)}")
            base = preset(str(name), cameras=cameras)
            return base.model_copy(update={"prompt_key": cls._prompt(data["prompt_key"])}) \
                if "prompt_key" in data else base
        if cameras is not None:
            raise ConfigError(f"{where}.cameras: only used with a preset")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(where, exc)) from None

    def specs(self, dof: int | None = None) -> tuple[ObservationSpec, ...]:
        """The observation entries this mapping produces (state sizes need ``size`` or ``dof``)."""
        out = [ObservationSpec(key=c.key, shape=c.shape, dtype="uint8") for c in self.camera]
        for s in self.state:
            n = s.size if s.size is not None else (s.natural_size(dof) if dof else None)
            out.append(ObservationSpec(key=s.key, shape=(n,) if n else (), dtype=s.dtype))
        if self.prompt_key is not None:
            out.append(ObservationSpec(key=self.prompt_key, dtype="str"))
        return tuple(out)

    def build(self, state: RobotState | None, frames: Mapping[str, np.ndarray | None],
              instruction: str = "", *, allow_missing: bool = False, dof: int | None = None,
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The observation dict for one request.

        ``frames``: camera name -> HxWx3 uint8 frame. A camera without a frame (absent or
        None) and a missing ``state`` are errors unless ``allow_missing`` (for ``rtvla policy
        info``, which has nothing connected): then they are zeros of the right shape.
        ``extra``: further entries the caller computes (say, a perceived object position),
        by flat key; they may not replace a mapped key.
        """
        obs: dict[str, Any] = {}
        for key, value in dict(extra or {}).items():
            path = key_path(key)
            if path in self._mapped_keys():
                raise PolicyError(f"extra observation {key_text(path)!r} is already mapped")
            set_path(obs, path, value)
        for cam in self.camera:
            frame = frames.get(cam.camera)
            if frame is None:
                if not allow_missing:
                    raise PolicyError(f"observation {key_text(cam.key)!r} needs a frame from camera "
                                      f"{cam.camera!r}; cameras with frames: {sorted(k for k, v in frames.items() if v is not None) or 'none'}")
                set_path(obs, cam.key, np.zeros(cam.shape, np.uint8))
            else:
                set_path(obs, cam.key, cam.encode(frame))
        if state is None and self.state and not allow_missing:
            raise PolicyError(f"observation {key_text(self.state[0].key)!r} needs the robot's state; none given")
        if state is not None:
            dof = int(np.asarray(state.q).size)
        for s in self.state:
            set_path(obs, s.key, s.encode(state, dof))
        if self.prompt_key is not None:
            set_path(obs, self.prompt_key, str(instruction))
        return obs


def _libero(cams: Mapping[str, str]) -> ObservationMapping:
    return ObservationMapping(
        camera=(CameraInput(key="observation/image", camera=cams["image"]),
                CameraInput(key="observation/wrist_image", camera=cams["wrist_image"])),
        state=(StateInput(key="observation/state", fields=("joint_position", "gripper"), size=8),),
    )


def _droid(cams: Mapping[str, str]) -> ObservationMapping:
    return ObservationMapping(
        camera=(CameraInput(key="observation/exterior_image_1_left", camera=cams["exterior_image_1_left"]),
                CameraInput(key="observation/wrist_image_left", camera=cams["wrist_image_left"])),
        state=(StateInput(key="observation/joint_position", fields=("joint_position",), size=7),
               StateInput(key="observation/gripper_position", fields=("gripper",), size=1)),
    )


def _aloha(cams: Mapping[str, str]) -> ObservationMapping:
    return ObservationMapping(
        camera=tuple(CameraInput(key=("images", name), camera=cams[name], layout="chw")
                     for name in ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")),
        state=(StateInput(key="state", fields=("joint_position", "gripper"), size=14),),
    )


#: Preset name -> (builder, default camera names by layout slot).
PRESETS: dict[str, tuple[Any, dict[str, str]]] = {
    "libero": (_libero, {"image": "head", "wrist_image": "wrist"}),
    "droid": (_droid, {"exterior_image_1_left": "head", "wrist_image_left": "wrist"}),
    "aloha": (_aloha, {"cam_high": "head", "cam_low": "low", "cam_left_wrist": "left_wrist",
                       "cam_right_wrist": "right_wrist"}),
}


def preset(name: str, cameras: Mapping[str, str] | None = None) -> ObservationMapping:
    """openpi's example layout ``name``; ``cameras`` maps its slots to this robot's cameras."""
    if name not in PRESETS:
        raise ConfigError(f"policy.observation.preset: unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    build, defaults = PRESETS[name]
    cams = dict(defaults)
    for slot, cam in dict(cameras or {}).items():
        if slot not in defaults:
            raise ConfigError(f"policy.observation.cameras.{slot}: preset {name!r} has camera slots "
                              f"{', '.join(defaults)}")
        if not isinstance(cam, str) or not cam:
            raise ConfigError(f"policy.observation.cameras.{slot}: a camera name, got {cam!r}")
        cams[slot] = cam
    return build(cams)
