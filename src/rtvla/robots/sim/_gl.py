"""Pick the offscreen GL backend before MuJoCo is first imported.

MuJoCo's Python package reads ``MUJOCO_GL`` once, at import time. Every module of
``rtvla.robots.sim`` imports this one before ``mujoco`` so that headless machines render
through EGL unless the user chose another backend (``osmesa``, ``glfw``).
"""

from __future__ import annotations

import os

__all__ = ["gl_backend"]

os.environ.setdefault("MUJOCO_GL", "egl")


def gl_backend() -> str:
    """The backend MuJoCo was (or will be) told to use."""
    return os.environ.get("MUJOCO_GL", "")
