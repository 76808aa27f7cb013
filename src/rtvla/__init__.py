"""rtvla: make Vision-Language-Action robot stacks run in real time, and prove it."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
