from __future__ import annotations

import shutil

import pytest

from rtvla.errors import ConfigError, PartError, PolicyServerError
from rtvla.policy import (
    ObservationMapping,
    OnnxPolicy,
    PolicyServer,
    PolicySettings,
    WebsocketPolicy,
    builtin_names,
    describe_source,
    open_policy,
)
from rtvla.policy import sources as sources_mod


def test_onnx_file_and_options(linear_onnx):
    p = open_policy(str(linear_onnx), {"rate_hz": 30})
    assert isinstance(p, OnnxPolicy) and p.metadata.rate_hz == 30.0
    with pytest.raises(ConfigError, match=r"policy.options.threads: Input should be greater than or equal to 1"):
        open_policy(str(linear_onnx), {"threads": 0})
    with pytest.raises(ConfigError, match=r"policy.options.bogus: unknown key"):
        open_policy(str(linear_onnx), {"bogus": 1})
    with pytest.raises(ConfigError, match="ONNX file not found"):
        open_policy("nowhere/model.onnx")


def test_builtins_are_the_shipped_onnx_files(tmp_path, monkeypatch, linear_onnx):
    shutil.copy(linear_onnx, tmp_path / "tiny.onnx")
    monkeypatch.setattr(sources_mod, "MODELS_DIR", tmp_path)
    assert "tiny" in builtin_names()
    p = open_policy("builtin:tiny")
    assert isinstance(p, OnnxPolicy) and p.metadata.horizon == 10
    with pytest.raises(PartError, match="unknown built-in policy 'builtin:nope'; built-ins: builtin:tiny"):
        open_policy("builtin:nope")


def test_builtin_registry_factory(monkeypatch, linear_onnx):
    monkeypatch.setitem(sources_mod.BUILTIN_POLICIES, "linear-registry", "rtvla.policy.onnx:OnnxPolicy")
    p = open_policy("builtin:linear-registry", {"path": str(linear_onnx)})
    assert isinstance(p, OnnxPolicy)


def test_websocket_source(linear_onnx):
    with PolicyServer(OnnxPolicy(linear_onnx)) as srv:
        p = open_policy(srv.url, {"timeout_s": 2.0})
        assert isinstance(p, WebsocketPolicy) and p.options.timeout_s == 2.0
        p.close()
    with pytest.raises(PolicyServerError):
        open_policy("ws://127.0.0.1:9", {"connect_timeout_s": 0.5})
    with pytest.raises(ConfigError, match="drop 'url'"):
        open_policy("ws://127.0.0.1:9", {"url": "ws://x"})


def test_module_path_and_unknown_names(linear_onnx):
    p = open_policy("rtvla.policy.onnx:OnnxPolicy", {"path": str(linear_onnx)})
    assert isinstance(p, OnnxPolicy)
    with pytest.raises(PartError, match="unknown policy 'mystery'"):
        open_policy("mystery")
    with pytest.raises(PartError, match=r"expected a Policy .missing metadata, infer, close"):
        open_policy("rtvla.policy.observation:ObservationMapping")
    assert [describe_source(s) for s in ("ws://a:1", "builtin:x", "m.onnx", "a.b:c")] == \
        ["websocket", "builtin", "onnx", "part"]


def test_policy_settings_table():
    s = PolicySettings.from_mapping({"source": "ws://gpu:8000", "options": {"rate_hz": 15},
                                     "observation": {"preset": "droid"}})
    assert isinstance(s.observation_mapping(), ObservationMapping) and s.placement == "process"
    with pytest.raises(ConfigError, match="unknown preset"):
        PolicySettings.from_mapping({"observation": {"preset": "nope"}})
    with pytest.raises(ConfigError, match=r"policy.placement"):
        PolicySettings.from_mapping({"placement": "gpu"})
    with pytest.raises(ConfigError, match=r"policy.action.slice"):
        PolicySettings.from_mapping({"action": {"slice": []}})
