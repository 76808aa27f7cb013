"""``[[cameras]]`` entries that name a camera part (``part:SPEC``) go through the resolver."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from rtvla.errors import ConfigError, PartError
from rtvla.runtime.wiring import CameraSpec, open_cameras


@pytest.fixture
def emb():
    """A robot that carries no camera (only part: sources are under test)."""
    return SimpleNamespace(cameras={})


def _specs(entries, emb):
    return [CameraSpec.model_validate(e) for e in entries]


def test_a_module_attr_camera_part_is_built_with_its_options_and_frames_flow(emb):
    specs = _specs([{"name": "side", "source": "part:rtvla.perception.synthetic:SyntheticSource",
                     "width": 96, "height": 64, "options": {"depth": True}}], emb)
    (cam,) = open_cameras(specs, emb)
    assert cam.name == "side" and not cam.robot_camera
    cam.source.open()
    try:
        frame = None
        deadline = time.monotonic() + 5.0
        while frame is None and time.monotonic() < deadline:
            frame = cam.source.read()
            time.sleep(0.01)
        assert frame is not None
        assert frame.image.shape == (64, 96, 3)
        assert frame.depth is not None
    finally:
        cam.source.close()


def test_an_unknown_camera_part_names_the_entry_and_lists_what_exists(emb):
    specs = _specs([{"name": "side", "source": "part:no_such_camera"}], emb)
    with pytest.raises(PartError) as err:
        open_cameras(specs, emb)
    text = str(err.value)
    assert "no_such_camera" in text and "synthetic" in text


def test_a_bad_camera_part_option_names_the_camera_and_the_field(emb):
    specs = _specs([{"name": "side", "source": "part:synthetic", "options": {"depht": True}}], emb)
    with pytest.raises(PartError) as err:
        open_cameras(specs, emb)
    assert "cameras.side.options" in str(err.value) and "depht" in str(err.value)


def test_options_without_a_part_source_are_refused(emb):
    specs = _specs([{"name": "usb", "source": "opencv:0", "options": {"x": 1}}], emb)
    with pytest.raises(ConfigError, match=r"cameras\.usb\.options"):
        open_cameras(specs, emb)


def test_part_without_a_name_is_refused(emb):
    specs = _specs([{"name": "x", "source": "part:"}], emb)
    with pytest.raises(ConfigError, match="name the camera part"):
        open_cameras(specs, emb)
