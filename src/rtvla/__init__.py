"""rtvla: run Vision-Language-Action robot stacks in real time, and prove it.

``rtvla.Stack`` is the Python API (imported on first use, so ``import rtvla`` stays light)::

    import rtvla

    with rtvla.Stack.from_config("rtvla.toml") as stack:
        report = stack.run("put the red cube in the blue bin")
        print(report.success, report.components["control"]["missed"])
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Stack", "TaskReport", "__version__"]


def __getattr__(name: str) -> Any:  # PEP 562: the runtime loads MuJoCo, OpenCV, ONNX Runtime
    if name == "Stack":
        from rtvla.runtime.stack import Stack

        return Stack
    if name == "TaskReport":
        from rtvla.runtime.task import TaskReport

        return TaskReport
    raise AttributeError(f"module 'rtvla' has no attribute {name!r}")
