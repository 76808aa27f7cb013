"""The parts resolver: built-in names, entry points of installed distributions, module paths,
and a clear PartError for every misconfiguration."""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtvla import parts
from rtvla.errors import ConfigError, PartError
from rtvla.parts import BUILTINS, FactoryRef, available, build, resolve
from rtvla.robots.base import Robot

_PLUGIN = '''
from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: str
    baud: int = 115200


def make_robot(*, port, baud, recorder=None):
    return {"port": port, "baud": baud, "recorder": recorder}


make_robot.Options = Options


def make_plain(width, height=240):
    return ("plain", width, height)


def make_bad_config(level=1):
    from rtvla.errors import ConfigError
    raise ConfigError(f"detector.level must be < 1, got {level}")


class Thing:
    pass
'''


def _dist(site: Path, name: str, version: str, eps: dict[str, dict[str, str]]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in eps.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path holding a plug-in module and a distribution declaring it."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "fakeparts_mod.py").write_text(_PLUGIN)
    (root / "fakeparts_broken.py").write_text("import numpy_but_misspelled  # noqa\n")
    _dist(root, "fake-parts", "1.2.3", {
        "rtvla.robots": {"fake_robot": "fakeparts_mod:make_robot", "broken_robot": "fakeparts_broken:make",
                         "sim": "fakeparts_mod:make_robot"},
        "rtvla.cameras": {"plain_cam": "fakeparts_mod:make_plain"},
        "rtvla.detectors": {"missing_attr": "fakeparts_mod:nope", "picky": "fakeparts_mod:make_bad_config"},
    })
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield root
    for mod in ("fakeparts_mod", "fakeparts_broken"):
        sys.modules.pop(mod, None)


# -- built-ins ---------------------------------------------------------------------------


def test_builtin_names_resolve_lazily_and_build() -> None:
    ref = resolve("detector", "color")
    assert (ref.origin, ref.target) == ("built-in", "rtvla.perception.color:ColorDetector")
    det = build("detector", "color", {"min_area_fraction": 0.001})
    assert type(det).__name__ == "ColorDetector" and det.min_area_fraction == 0.001
    assert resolve("robot", "sim").target == "rtvla.robots.sim.embodiment:make_sim"


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k, names in BUILTINS.items() for n in names])
def test_every_builtin_target_loads(kind: str, name: str) -> None:
    ref = resolve(kind, name)
    if importlib.util.find_spec(ref.module) is None:
        with pytest.raises(PartError, match=f"cannot import module '{re.escape(ref.module)}'"):
            ref.load()
        pytest.skip(f"{ref.module} is not written yet")
    assert callable(ref.load())


def test_importing_the_resolver_imports_no_part() -> None:
    code = "import sys, rtvla.parts; print(sorted(m for m in sys.modules if m.startswith('rtvla')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(eval(out)) <= {"rtvla", "rtvla.errors", "rtvla.config", "rtvla.parts"}


def test_builtin_options_without_a_model_are_checked_against_the_signature() -> None:
    with pytest.raises(PartError, match=r"detector\.options\.min_area: unknown option .*accepted: .*min_area_fraction"):
        build("detector", "color", {"min_area": 0.1})


# -- entry points ------------------------------------------------------------------------


def test_entry_point_resolves_with_its_distribution(site) -> None:
    ref = resolve("robot", "fake_robot")
    assert ref.origin == "entry point of fake-parts 1.2.3"
    assert ref.distribution == "fake-parts" and ref.target == "fakeparts_mod:make_robot"
    out = build("robot", "fake_robot", {"port": "/dev/ttyUSB0"}, recorder="REC", clock="unused")
    assert out == {"port": "/dev/ttyUSB0", "baud": 115200, "recorder": "REC"}  # context by name only
    names = [r.name for r in available("robot")]
    assert {"sim", "ros2", "fake_robot", "broken_robot"} <= set(names)


def test_entry_point_shadowed_by_a_builtin_is_listed_but_not_used(site) -> None:
    shadowed = [r for r in available("robot") if r.name == "sim" and r.origin != "built-in"]
    assert shadowed and shadowed[0].shadowed_by == "built-in"
    assert resolve("robot", "sim").origin == "built-in"


def test_a_name_two_distributions_declare_is_refused(site) -> None:
    _dist(site, "other-parts", "0.1", {"rtvla.robots": {"fake_robot": "fakeparts_mod:make_plain"}})
    importlib.invalidate_caches()
    with pytest.raises(PartError, match=r"declared by several distributions: .*fake-parts.*other-parts"):
        resolve("robot", "fake_robot")


# -- module paths ------------------------------------------------------------------------


def test_module_path_resolves_and_builds(site) -> None:
    ref = resolve("camera", "fakeparts_mod:make_plain")
    assert ref.origin == "module path" and ref.name == "fakeparts_mod:make_plain"
    assert build("camera", "fakeparts_mod:make_plain", {"width": 320}) == ("plain", 320, 240)


def test_a_python_callable_is_a_part_too(site) -> None:
    mod = importlib.import_module("fakeparts_mod")
    assert build("camera", mod.make_plain, {"width": 8}) == ("plain", 8, 240)


# -- misconfigurations -------------------------------------------------------------------


def test_unknown_name_lists_what_is_available(site) -> None:
    with pytest.raises(PartError) as err:
        resolve("robot", "kinematic_armm")
    msg = str(err.value)
    assert "unknown robot 'kinematic_armm'" in msg
    assert "fake_robot" in msg and "sim" in msg and "rtvla.robots" in msg
    with pytest.raises(PartError, match=r"available: .*color.*onnx"):
        resolve("detector", "yolo")


def test_missing_option_names_the_part_and_field(site) -> None:
    with pytest.raises(PartError, match=r"robot\.options\.port: Field required"):
        build("robot", "fake_robot", {})
    with pytest.raises(PartError, match=r"robot\.options\.baud: .*integer.*'fast'"):
        build("robot", "fake_robot", {"port": "x", "baud": "fast"})
    with pytest.raises(PartError, match=r"robot\.options\.speed: unknown key"):
        build("robot", "fake_robot", {"port": "x", "speed": 3})
    with pytest.raises(PartError, match=r"cameras\.front\.options\.width: Field required"):
        build("camera", "plain_cam", {}, where="cameras.front.options")


def test_import_failure_names_the_module_and_why(site) -> None:
    with pytest.raises(PartError) as err:
        build("robot", "broken_robot", {})
    msg = str(err.value)
    assert "robot 'broken_robot' (entry point of fake-parts 1.2.3)" in msg
    assert "cannot import module 'fakeparts_broken'" in msg
    assert "ModuleNotFoundError" in msg and "numpy_but_misspelled" in msg
    with pytest.raises(PartError, match=r"cannot import module 'no_such_pkg\.mod'"):
        build("planner", "no_such_pkg.mod:make", {})
    with pytest.raises(PartError, match="module 'fakeparts_mod' has no attribute 'nope'"):
        build("detector", "missing_attr", {})


def test_wrong_type_is_refused(site) -> None:
    from rtvla.robots.embodiment import Embodiment

    with pytest.raises(PartError, match=r"returned a dict, expected Embodiment"):
        build("robot", "fake_robot", {"port": "p"}, expect=Embodiment)
    with pytest.raises(PartError, match=r"returned a tuple, expected Embodiment or Robot \(missing .*read_state"):
        build("camera", "plain_cam", {"width": 1}, expect=(Embodiment, Robot))
    with pytest.raises(PartError, match=r"model_config is a dict, not a factory"):
        resolve("robot", "fakeparts_mod:Options.model_config").load()


def test_a_factory_config_error_becomes_a_part_error(site) -> None:
    with pytest.raises(PartError, match=r"detector 'picky' .*detector\.level must be < 1, got 1") as err:
        build("detector", "picky", {})
    assert isinstance(err.value, ConfigError)


@pytest.mark.parametrize("spec", ["", "  ", 3, None, "a:b:c", "bad name!", "pkg.:f", ":f"])
def test_malformed_specs(spec) -> None:
    with pytest.raises(PartError):
        resolve("robot", spec)


def test_unknown_kind() -> None:
    with pytest.raises(PartError, match="unknown part kind 'sensor'; kinds: robot, camera"):
        resolve("sensor", "x")


# -- the control process's factory ---------------------------------------------------------


def test_factory_ref_pickles_and_builds(site) -> None:
    ref = resolve("robot", "fake_robot")
    fr = FactoryRef.of(ref, {"port": "/dev/x"}, where="robot.options")
    back = pickle.loads(pickle.dumps(fr))
    assert back == fr
    assert back(recorder=None)["port"] == "/dev/x"
    with pytest.raises(PartError, match=r"robot\.options\.baud"):
        FactoryRef("fakeparts_mod:make_robot", {"port": "x", "baud": "no"}, where="robot.options")()


def test_factory_ref_refuses_what_another_process_cannot_import() -> None:
    def local_factory():
        return None

    with pytest.raises(PartError, match="locally defined factory"):
        FactoryRef.of(resolve("robot", local_factory))
    with pytest.raises(PartError, match="must look like"):
        FactoryRef("not a target")


# -- rtvla parts -----------------------------------------------------------------------------


def test_cli_lists_builtins_and_entry_points_as_json(site, tmp_path) -> None:
    from rtvla.cli.main import app

    res = CliRunner().invoke(app, ["parts", "--json", "-"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data) == set(parts.KINDS)
    robots = {r["name"]: r for r in data["robot"] if r["origin"] != "entry point of fake-parts 1.2.3"}
    assert robots["sim"]["origin"] == "built-in" and "ros2" in robots
    assert {r["name"] for r in data["detector"]} >= {"color", "onnx", "missing_attr"}
    fake = [r for r in data["robot"] if r["name"] == "fake_robot"][0]
    assert fake["distribution"] == "fake-parts"

    out = tmp_path / "parts.json"
    res = CliRunner().invoke(app, ["parts", "robot", "--check", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(out.read_text())["robot"]}
    assert rows["fake_robot"]["loads"] and rows["fake_robot"]["options"] == {"port": None, "baud": "115200"}
    assert rows["broken_robot"]["loads"] is False and "numpy_but_misspelled" in rows["broken_robot"]["error"]
    assert "robot" in json.loads(out.read_text()) and "camera" not in json.loads(out.read_text())

    res = CliRunner().invoke(app, ["parts", "sensor"])
    assert res.exit_code == 2 and "unknown part kind" in res.output

