"""Fixtures for the simulated-robot tests: a fresh lock-step robot per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rtvla.robots.sim import SceneConfig, SimRobot, load_scene


@pytest.fixture(scope="session")
def scene() -> SceneConfig:
    return load_scene()


@pytest.fixture
def robot(scene: SceneConfig) -> Iterator[SimRobot]:
    with SimRobot(scene, lockstep=True) as r:
        yield r
