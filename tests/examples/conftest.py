"""The example plug-in (examples/kinematic_arm) as a user would have it installed: its
``src`` on ``sys.path`` and a ``dist-info`` declaring its entry point, without running pip."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kinematic_arm"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """A site folder with the package's dist-info (entry points read from its pyproject)."""
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = tmp_path_factory.mktemp("site")
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    lines = []
    for group, entries in meta["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


@pytest.fixture(autouse=True)
def installed(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.syspath_prepend(str(plugin_site))
    importlib.invalidate_caches()
    yield


@pytest.fixture
def scene(installed):
    from rtvla_kinematic_arm import load_scene

    return load_scene()


@pytest.fixture
def arm(scene):
    from rtvla_kinematic_arm import KinematicArm

    robot = KinematicArm(scene, lockstep=True)
    robot.connect()
    yield robot
    robot.close()


def wait_until(cond, timeout_s: float, poll_s: float = 0.01) -> bool:
    """Poll ``cond`` until it holds or ``timeout_s`` passes (waits on the condition, no fixed sleep)."""
    import threading
    import time

    end = time.monotonic() + timeout_s
    ev = threading.Event()
    while time.monotonic() < end:
        if cond():
            return True
        ev.wait(poll_s)
    return bool(cond())


@pytest.fixture
def until():
    return wait_until

