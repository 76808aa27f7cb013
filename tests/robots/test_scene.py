from __future__ import annotations

import math

import mujoco
import pytest

from rtvla.errors import ConfigError
from rtvla.robots.sim import SceneConfig, assets_dir, load_scene


def test_packaged_scene_loads_with_places_objects_and_receptacles(scene: SceneConfig) -> None:
    assert {"home", "table", "kitchen", "shelf"} <= set(scene.places)
    assert set(scene.objects) == {"red_cube", "green_cube", "blue_cube"}
    assert set(scene.receptacles) == {"blue_bin", "green_bin"}
    assert scene.place_for("red_cube").name == "table"
    assert scene.place_for("blue_bin").name == "kitchen"
    assert scene.place_for("home").pose == (-2.5, -2.5, 0.0)
    model = scene.load_model()
    assert model.opt.timestep == pytest.approx(0.002)
    for spec in [*scene.objects.values(), *scene.receptacles.values()]:
        assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, spec.body) >= 0
    assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, scene.robot.camera) >= 0


def test_unknown_names_list_the_known_ones(scene: SceneConfig) -> None:
    with pytest.raises(KeyError, match="kitchen"):
        scene.place("garage")
    with pytest.raises(KeyError, match="red_cube"):
        scene.place_for("purple_cube")


def test_bad_reference_and_bad_values_are_named(tmp_path) -> None:
    text = (assets_dir() / "scene.toml").read_text()
    bad = tmp_path / "scene.toml"
    bad.write_text(
        text.replace('place = "table"', 'place = "garage"', 1).replace(
            'mjcf = "scene.xml"', f'mjcf = "{assets_dir() / "scene.xml"}"'
        )
    )
    with pytest.raises(ConfigError, match=r"objects\.red_cube\.place = 'garage'"):
        load_scene(bad)
    bad.write_text(text.replace("robot_radius_m = 0.30", "robot_radius_m = -1"))
    with pytest.raises(ConfigError, match="robot_radius_m"):
        load_scene(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_scene(tmp_path / "missing.toml")


def test_places_are_inside_the_room(scene: SceneConfig) -> None:
    for place in scene.places.values():
        x, y, yaw = place.pose
        assert abs(x) < 4 and abs(y) < 4 and math.isfinite(yaw)
