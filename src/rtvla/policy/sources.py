"""One way to open a policy from a source string, as config and the CLI name it.

========================  =======================================================
source                    opens
========================  =======================================================
``ws://HOST:PORT``        :class:`~rtvla.policy.websocket.WebsocketPolicy` (also ``wss://``)
``builtin:NAME``          a factory in :data:`BUILTIN_POLICIES`, else the ONNX file
                          ``rtvla/policy/models/NAME.onnx`` shipped in the package
``path/to/model.onnx``    :class:`~rtvla.policy.onnx.OnnxPolicy`
``package.module:attr``   a factory, through the parts resolver (kind ``policy``)
an entry-point name       an entry point of group ``rtvla.policies``
========================  =======================================================

``options`` are the backend's options (``[policy.options]``), validated by its model, so a
mistake names the field: ``policy.options.timeout_s: Input should be greater than 0``.

Usage::

    policy = open_policy("ws://127.0.0.1:8000", {"timeout_s": 2.0, "rate_hz": 15})
    policy = open_policy("builtin:pick")
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rtvla.config import format_validation_error
from rtvla.errors import ConfigError, PartError
from rtvla.policy.base import Policy

__all__ = ["BUILTIN_POLICIES", "MODELS_DIR", "builtin_names", "describe_source", "open_policy"]

logger = logging.getLogger(__name__)

#: Where the package's ONNX policies live; ``NAME.onnx`` there is ``builtin:NAME``.
MODELS_DIR = Path(__file__).resolve().parent / "models"

#: Built-in policies that are more than an ONNX file: name -> ``"module:factory"`` (the
#: factory takes the options as keyword arguments and returns a Policy).
BUILTIN_POLICIES: dict[str, str] = {}


def builtin_names() -> list[str]:
    """Every ``builtin:NAME`` available: the registry's and the shipped ONNX files'."""
    files = sorted(p.stem for p in MODELS_DIR.glob("*.onnx")) if MODELS_DIR.is_dir() else []
    return sorted(set(BUILTIN_POLICIES) | set(files))


def describe_source(source: str) -> str:
    """``websocket``, ``builtin``, ``onnx`` or ``part``: which branch opens ``source``."""
    if source.startswith(("ws://", "wss://")):
        return "websocket"
    if source.startswith("builtin:"):
        return "builtin"
    if source.endswith(".onnx") or Path(source).is_file():
        return "onnx"
    return "part"


def _options(model: Any, options: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    data = {**dict(options), **dict(extra)}
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error("policy.options", exc)) from None
    return validated.model_dump()


def _open_onnx(path: str | Path, options: Mapping[str, Any]) -> Policy:
    from rtvla.policy.onnx import OnnxOptions, OnnxPolicy

    if "path" in options:
        raise ConfigError("policy.options.path: the source names the ONNX file; drop 'path'")
    return OnnxPolicy(**_options(OnnxOptions, options, {"path": str(path)}))


def open_policy(source: str, options: Mapping[str, Any] | None = None) -> Policy:
    """Open the policy ``source`` names (see the module docstring) with ``options``.

    Raises :class:`~rtvla.errors.ConfigError` (a :class:`~rtvla.errors.PartError` for an
    unknown name) for a bad source or option, and whatever the backend raises when it cannot
    open (:class:`~rtvla.errors.PolicyServerError` for an unreachable server).
    """
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"policy.source must be a non-empty string, got {source!r}")
    source = source.strip()
    opts = dict(options or {})
    kind = describe_source(source)
    if kind == "websocket":
        from rtvla.policy.websocket import WebsocketOptions, WebsocketPolicy

        if "url" in opts:
            raise ConfigError("policy.options.url: the source is the URL; drop 'url'")
        return WebsocketPolicy(**_options(WebsocketOptions, opts, {"url": source}))
    if kind == "builtin":
        name = source.removeprefix("builtin:")
        if name in BUILTIN_POLICIES:
            from rtvla.parts import FactoryRef

            return FactoryRef(BUILTIN_POLICIES[name], opts, kind="policy", where="policy.options")()
        path = MODELS_DIR / f"{name}.onnx"
        if not path.is_file():
            raise PartError(f"unknown built-in policy {source!r}; built-ins: "
                            f"{', '.join('builtin:' + n for n in builtin_names()) or 'none installed'}")
        return _open_onnx(path, opts)
    if kind == "onnx":
        if not Path(source).is_file():
            raise ConfigError(f"policy.source: ONNX file not found: {source}")
        return _open_onnx(source, opts)
    from rtvla.parts import build

    # Checked here, not with build(expect=Policy): parts.check_type counts a runtime-checkable
    # Protocol's own _is_protocol/_is_runtime_protocol attributes as required members.
    policy = build("policy", source, opts, where="policy.options")
    missing = [m for m in ("metadata", "infer", "close") if not hasattr(policy, m)]
    if missing:
        raise PartError(f"policy {source!r}: the factory returned a {type(policy).__name__}, expected "
                        f"a Policy (missing {', '.join(missing)})")
    return policy
