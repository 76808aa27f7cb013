from __future__ import annotations

import numpy as np
import pytest

from rtvla.errors import ConfigError, PolicyError
from rtvla.policy import ObservationMapping, preset, resize_with_pad

from .conftest import arm_state


def _frames():
    rng = np.random.default_rng(0)
    return {name: rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
            for name in ("head", "wrist", "low", "left_wrist", "right_wrist")}


def test_libero_layout():
    obs = preset("libero").build(arm_state(), _frames(), "pick up the cube")
    assert set(obs) == {"observation/image", "observation/wrist_image", "observation/state", "prompt"}
    assert obs["observation/image"].shape == (224, 224, 3) and obs["observation/image"].dtype == np.uint8
    assert obs["observation/wrist_image"].shape == (224, 224, 3)
    st = obs["observation/state"]
    assert st.shape == (8,) and st.dtype == np.float32
    np.testing.assert_allclose(st, [0.1] * 6 + [0.25, 0.0], rtol=1e-6)  # q, gripper, zero pad
    assert obs["prompt"] == "pick up the cube"


def test_droid_layout():
    obs = preset("droid", cameras={"exterior_image_1_left": "low"}).build(arm_state(), _frames(), "x")
    assert set(obs) == {"observation/exterior_image_1_left", "observation/wrist_image_left",
                        "observation/joint_position", "observation/gripper_position", "prompt"}
    assert obs["observation/joint_position"].shape == (7,)
    assert obs["observation/gripper_position"].tolist() == [0.25]
    np.testing.assert_array_equal(obs["observation/exterior_image_1_left"],
                                  resize_with_pad(_frames()["low"], 224, 224))


def test_aloha_layout_is_nested_chw():
    obs = preset("aloha").build(arm_state(), _frames(), "fold")
    assert set(obs) == {"state", "images", "prompt"}
    assert set(obs["images"]) == {"cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"}
    for img in obs["images"].values():
        assert img.shape == (3, 224, 224) and img.dtype == np.uint8 and img.flags.c_contiguous
    np.testing.assert_array_equal(obs["images"]["cam_high"].transpose(1, 2, 0),
                                  resize_with_pad(_frames()["head"], 224, 224))
    assert obs["state"].shape == (14,)
    specs = {s.text: s.shape for s in preset("aloha").specs()}
    assert specs["images/cam_high"] == (3, 224, 224) and specs["state"] == (14,)


def test_resize_with_pad_geometry_matches_openpi():
    img = np.full((480, 640, 3), 200, np.uint8)
    out = resize_with_pad(img, 224, 224)
    # 640x480 -> 224x168, padded 28 rows above and below with zeros.
    assert out.shape == (224, 224, 3)
    assert (out[:28] == 0).all() and (out[-28:] == 0).all() and (out[28:196] == 200).all()
    tall = resize_with_pad(np.full((300, 100, 3), 9, np.uint8), 224, 224)
    # 100x300 -> 74x224 (openpi's int() truncation), 75 columns of padding on the left.
    assert (tall[:, :75] == 0).all() and (tall[:, 75:149] == 9).all() and (tall[:, 149:] == 0).all()
    same = np.zeros((224, 224, 3), np.uint8)
    assert resize_with_pad(same, 224, 224) is same


def test_missing_camera_is_an_error_unless_allowed():
    frames = _frames()
    del frames["wrist"]
    with pytest.raises(PolicyError, match="needs a frame from camera 'wrist'"):
        preset("libero").build(arm_state(), frames, "x")
    obs = preset("libero").build(arm_state(), frames, "x", allow_missing=True)
    assert (obs["observation/wrist_image"] == 0).all() and obs["observation/wrist_image"].shape == (224, 224, 3)
    with pytest.raises(PolicyError, match="needs the robot's state"):
        preset("libero").build(None, _frames(), "x")
    zeros = preset("droid").build(None, {}, "", allow_missing=True)
    assert zeros["observation/joint_position"].shape == (7,) and not zeros["observation/joint_position"].any()


def test_bad_frames_rejected():
    with pytest.raises(PolicyError, match="a frame is HxWx3"):
        preset("libero").build(arm_state(), {"head": np.zeros((10, 10)), "wrist": np.zeros((4, 4, 3), np.uint8)})
    with pytest.raises(PolicyError, match="frames are uint8"):
        preset("libero").build(arm_state(), {"head": np.zeros((10, 10, 3)), "wrist": np.zeros((4, 4, 3), np.uint8)})


def test_table_spelled_out_and_errors():
    m = ObservationMapping.from_table({
        "camera": [{"key": ["images", "top"], "camera": "head", "height": 96, "width": 128, "layout": "chw"}],
        "state": [{"key": "state", "fields": ["joint_position", "base_pose", "gripper"], "dtype": "float64"}],
        "prompt_key": "task",
    })
    obs = m.build(arm_state(), _frames(), "go")
    assert obs["images"]["top"].shape == (3, 96, 128)
    np.testing.assert_allclose(obs["state"], [0.1] * 6 + [1.0, 2.0, 0.5, 0.25])
    assert obs["task"] == "go" and obs["state"].dtype == np.float64
    assert ObservationMapping.from_table({"preset": "droid", "cameras": {"wrist_image_left": "hand"}}) \
        .camera[1].camera == "hand"
    with pytest.raises(ConfigError, match="unknown preset 'openvla'"):
        ObservationMapping.from_table({"preset": "openvla"})
    with pytest.raises(ConfigError, match=r"cameras.wrist: preset 'libero' has camera slots"):
        preset("libero", cameras={"wrist": "x"})
    with pytest.raises(ConfigError, match=r"policy.observation.camera.0.layout"):
        ObservationMapping.from_table({"camera": [{"key": "a", "camera": "c", "layout": "hw"}]})
    with pytest.raises(ConfigError, match="mapped twice"):
        ObservationMapping.from_table({"state": [{"key": "s", "fields": ["gripper"]},
                                                 {"key": "s", "fields": ["base_pose"]}]})
    with pytest.raises(PolicyError, match="more than size 4"):
        ObservationMapping.from_table({"state": [{"key": "s", "fields": ["joint_position"], "size": 4}]}) \
            .build(arm_state(), {})


def test_extra_entries():
    obs = preset("libero").build(arm_state(), _frames(), "x", extra={"object_position": np.array([0.1, 0.2, 0.3])})
    assert obs["object_position"].tolist() == [0.1, 0.2, 0.3]
    with pytest.raises(PolicyError, match="extra observation 'prompt' is already mapped"):
        preset("libero").build(arm_state(), _frames(), "x", extra={"prompt": "y"})
