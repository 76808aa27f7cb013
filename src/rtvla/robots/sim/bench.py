"""Measure the simulator against wall time: physics real-time factor and lag, the camera's
achieved rate and render cost, and how long ``read_state`` waits on the physics lock while
both run. ``python -m rtvla.robots.sim`` prints these figures.

Usage::

    figures = run_sim_bench(seconds=5.0, width=640, height=480, rate_hz=30.0)
    figures["physics"]["realtime_factor"], figures["camera"]["achieved_hz"]
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from rtvla.errors import ConfigError
from rtvla.robots.base import RobotCommand
from rtvla.robots.sim.camera import SimCamera, SimFrame
from rtvla.robots.sim.robot import SimRobot
from rtvla.robots.sim.scene import SceneConfig
from rtvla.timing import MONOTONIC, Clock

__all__ = ["run_sim_bench"]

logger = logging.getLogger(__name__)


def run_sim_bench(
    seconds: float = 5.0,
    *,
    width: int = 640,
    height: int = 480,
    rate_hz: float = 30.0,
    depth: bool = True,
    read_hz: float = 100.0,
    scene: SceneConfig | None = None,
    clock: Clock = MONOTONIC,
    progress: Callable[[float], None] | None = None,
) -> tuple[dict[str, Any], SimFrame | None]:
    """Run the real-time sim and its camera for ``seconds`` while reading state at ``read_hz``.

    The base drives a slow circle so the scene changes. Returns the figures and the last
    camera frame. ``progress`` is called with the fraction done about ten times a second.
    """
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"bench seconds must be > 0, got {seconds}")
    if not read_hz > 0:
        raise ConfigError(f"bench read_hz must be > 0, got {read_hz}")
    waits_ns: list[int] = []
    stop = threading.Event()
    with SimRobot(scene, clock=clock) as robot:
        robot.teleport_base(robot.scene.place("table").pose)
        with SimCamera(
            robot, width=width, height=height, rate_hz=rate_hz, depth=depth, clock=clock
        ) as cam:
            first = cam.wait_frame(timeout=10.0)
            frames0, render0 = cam.frames_rendered, cam.render_s_total
            robot.send_command(
                RobotCommand(stamp_ns=clock.now_ns(), base_vel=np.array([0.05, 0.0, 0.1]))
            )
            t0 = clock.now_ns()
            sim0 = robot.sim_time
            stats0 = robot.stats()
            end = t0 + int(seconds * 1e9)
            period = 1.0 / read_hz
            last_progress = t0
            while not stop.wait(period):
                a = clock.now_ns()
                robot.read_state()
                waits_ns.append(clock.now_ns() - a)
                if progress is not None and a - last_progress > 100_000_000:
                    progress(min(1.0, (a - t0) / (end - t0)))
                    last_progress = a
                if a >= end:
                    break
            wall = (clock.now_ns() - t0) * 1e-9
            frames = cam.frames_rendered - frames0
            render_s = cam.render_s_total - render0
            last = cam.read()
            stats = robot.stats()
            sim_elapsed = robot.sim_time - sim0
        del first
    w = np.array(waits_ns, dtype=float) / 1e3
    figures = {
        "seconds": wall,
        "physics": {
            "realtime_factor": sim_elapsed / wall if wall > 0 else 0.0,
            "lag_ms": stats.lag_s * 1e3,
            "dropped_steps": stats.dropped_steps - stats0.dropped_steps,  # within the window
            "dropped_steps_startup": stats0.dropped_steps,  # while the GL context was created
            "step_us_mean": stats.step_us_mean,
            "timestep_ms": robot.dt * 1e3,
        },
        "camera": {
            "width": width,
            "height": height,
            "depth": depth,
            "target_hz": rate_hz,
            "achieved_hz": frames / wall if wall > 0 else 0.0,
            "render_ms_mean": 1e3 * render_s / frames if frames else float("nan"),
        },
        "read_state_us": {
            "p50": float(np.percentile(w, 50)) if w.size else float("nan"),
            "p99": float(np.percentile(w, 99)) if w.size else float("nan"),
            "max": float(w.max()) if w.size else float("nan"),
            "n": int(w.size),
        },
    }
    logger.info("sim bench: %s", figures)
    return figures, last
