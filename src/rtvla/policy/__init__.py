"""Policies: the ``Policy`` protocol, observation and action mapping, the ONNX backend,
openpi's websocket protocol (codec, client, server), and a policy in its own process.

Open one with :func:`open_policy` (``ws://HOST:PORT``, ``builtin:NAME``, a ``.onnx`` file,
``package.module:factory``); run it off the control loop with :class:`PolicyProcess`.
Heavy backends (ONNX Runtime, websockets) are imported when used.
"""

from __future__ import annotations

from rtvla.policy.actions import ActionMapping, ActionSlice, DecodedChunk
from rtvla.policy.base import (
    REAL_TIME_CHUNKING,
    RTC_DELAY_KEY,
    RTC_LEFTOVER_KEY,
    Chunk,
    KeyPath,
    ObservationSpec,
    Policy,
    PolicyMetadata,
    check_output,
    get_path,
    infer_chunk,
    key_path,
    key_text,
    set_path,
    with_real_time_chunking,
)
from rtvla.policy.chunk_channel import ChunkLayout, ChunkReader, PolicyChunk, RequestWriter
from rtvla.policy.observation import (
    PRESETS,
    CameraInput,
    ObservationMapping,
    StateInput,
    preset,
    resize_with_pad,
)
from rtvla.policy.onnx import META_KEYS, OnnxOptions, OnnxPolicy, default_providers
from rtvla.policy.process import PolicyProcess
from rtvla.policy.server import PolicyServer
from rtvla.policy.settings import PolicySettings
from rtvla.policy.sources import (
    BUILTIN_POLICIES,
    MODELS_DIR,
    builtin_names,
    describe_source,
    open_policy,
)
from rtvla.policy.websocket import WebsocketOptions, WebsocketPolicy

__all__ = [
    "BUILTIN_POLICIES",
    "META_KEYS",
    "MODELS_DIR",
    "PRESETS",
    "REAL_TIME_CHUNKING",
    "RTC_DELAY_KEY",
    "RTC_LEFTOVER_KEY",
    "ActionMapping",
    "ActionSlice",
    "CameraInput",
    "Chunk",
    "ChunkLayout",
    "ChunkReader",
    "DecodedChunk",
    "KeyPath",
    "ObservationMapping",
    "ObservationSpec",
    "OnnxOptions",
    "OnnxPolicy",
    "Policy",
    "PolicyChunk",
    "PolicyMetadata",
    "PolicyProcess",
    "PolicyServer",
    "PolicySettings",
    "RequestWriter",
    "StateInput",
    "WebsocketOptions",
    "WebsocketPolicy",
    "builtin_names",
    "check_output",
    "default_providers",
    "describe_source",
    "get_path",
    "infer_chunk",
    "key_path",
    "key_text",
    "open_policy",
    "preset",
    "resize_with_pad",
    "set_path",
    "with_real_time_chunking",
]
