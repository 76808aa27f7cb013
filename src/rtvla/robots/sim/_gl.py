"""Pick the offscreen GL backend before MuJoCo is first imported.

MuJoCo's Python package reads ``MUJOCO_GL`` once, when it is imported. The package
``rtvla.robots.sim`` imports this module before anything imports ``mujoco`` so that
headless machines render through EGL unless the user chose another backend (``osmesa``,
``glfw``). If ``mujoco`` was imported earlier with ``MUJOCO_GL`` unset, MuJoCo has already
chosen GLFW (which needs a display); :func:`gl_backend` then says so, and the camera's
error tells the user to set ``MUJOCO_GL=egl`` in the environment.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["gl_backend", "gl_hint"]

logger = logging.getLogger(__name__)

_GL_MODULE = "mujoco.rendering.classic.gl_context"
_PREIMPORTED = _GL_MODULE in sys.modules and not os.environ.get("MUJOCO_GL")

os.environ.setdefault("MUJOCO_GL", "egl")
if _PREIMPORTED:
    logger.warning(
        "mujoco was imported before rtvla.robots.sim with MUJOCO_GL unset: offscreen rendering "
        "will use GLFW, which needs a display; set MUJOCO_GL=egl in the environment"
    )


def gl_backend() -> str:
    """The backend MuJoCo actually uses (or will use, if it is not imported yet)."""
    mod = sys.modules.get(_GL_MODULE)
    if mod is not None:
        return str(getattr(mod, "_MUJOCO_GL", "")) or "glfw"
    return os.environ.get("MUJOCO_GL", "")


def gl_hint() -> str:
    """Advice for an offscreen-rendering failure with the current backend."""
    if _PREIMPORTED:
        return (
            "mujoco was imported before rtvla.robots.sim with MUJOCO_GL unset, so it chose GLFW; "
            "set MUJOCO_GL=egl in the environment (or import rtvla.robots.sim first)"
        )
    return "install an EGL driver (libegl1, libgl1) or set MUJOCO_GL=osmesa"
