from __future__ import annotations

import pytest

from rtvla.config import DEFAULT_BUDGETS, load_config, parse_config
from rtvla.errors import ConfigError


def test_defaults_match_the_reference_requirements():
    cfg = load_config(environ={}, search_cwd=False)
    control = cfg.budget("control")
    assert (control.rate_hz, control.max_latency_ms, control.min_throughput_hz) == (100, 10, 100)
    assert (control.max_cpu_percent, control.max_memory_mb, control.critical) == (80, 100, True)
    nav = cfg.budget("navigation")
    assert (nav.rate_hz, nav.max_latency_ms, nav.max_memory_mb, nav.critical) == (10, 100, 500, True)
    per = cfg.budget("perception")
    assert (per.rate_hz, per.max_latency_ms, per.max_cpu_percent, per.max_memory_mb) == (30, 33, 70, 1000)
    llm = cfg.budget("llm")
    assert (llm.deadline_s, llm.min_throughput_hz, llm.max_memory_mb, llm.critical) == (5.0, 0.2, 4000, False)
    comm = cfg.budget("communication")
    assert (comm.max_latency_ms, comm.min_throughput_hz, comm.max_cpu_percent, comm.max_memory_mb) == (100, 10, 30, 50)
    assert cfg.budget("task").deadline_s == 120.0 and not cfg.budget("task").critical
    other = cfg.budget("my_arm_camera")
    assert (other.max_latency_ms, other.min_throughput_hz, other.max_cpu_percent, other.max_memory_mb) == (1000, 1, 80, 500)
    assert cfg.budget("perception.detect") == per  # sub-components inherit
    assert cfg.requirements.timing_requirements()["control"]["period_ms"] == pytest.approx(10.0)


def test_file_overrides_merge_with_defaults(tmp_path):
    f = tmp_path / "rtvla.toml"
    f.write_text("[budgets.control]\nrate_hz = 200\n[budgets.custom.arm_cam]\nmax_latency_ms = 50\n"
                 "[llm]\nmodel = 'qwen'\n")
    cfg = load_config(f, environ={})
    assert cfg.budget("control").rate_hz == 200
    assert cfg.budget("control").max_latency_ms == 10  # untouched fields keep defaults
    assert cfg.budget("arm_cam").max_latency_ms == 50
    assert cfg.section("llm") == {"model": "qwen"}
    assert cfg.section("perception") == {}


def test_env_overrides_the_file(tmp_path):
    f = tmp_path / "rtvla.toml"
    f.write_text("[budgets.perception]\nrate_hz = 15\n")
    env = {"RTVLA_BUDGETS__PERCEPTION__RATE_HZ": "20", "RTVLA_LLM__MODEL": "llama3", "HOME": "/x"}
    cfg = load_config(f, environ=env)
    assert cfg.budget("perception").rate_hz == 20
    assert cfg.section("llm")["model"] == "llama3"


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[budgets.control]\nrate_hz = -5\n", "budgets.control.rate_hz: rate_hz must be > 0, got -5"),
        ("[budgets.contorl]\nrate_hz = 5\n", "unknown component 'contorl'"),
        ("[budgets.control]\nrat_hz = 5\n", "budgets.control.rat_hz: unknown key"),
        ("[budgets.control]\nrate_hz = 'fast'\n", "budgets.control.rate_hz"),
        ("[budgets.control]\ncritical = 'maybe'\n", "budgets.control.critical"),
        ("[bogus]\nx = 1\n", "unknown config section 'bogus'"),
        ("[budgets.perception]\nmax_memory_mb = 0\n", "max_memory_mb must be > 0, got 0"),
    ],
)
def test_errors_name_the_field_and_value(tmp_path, toml, needle):
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_config(f, environ={})
    assert needle in str(exc.value)
    assert str(f) in str(exc.value)


def test_broken_toml_and_missing_file(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("[budgets.control\nrate_hz = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(f, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_custom_budget_cannot_shadow_builtin():
    with pytest.raises(ConfigError, match="built-in component"):
        parse_config({"budgets": {"custom": {"control": {"max_latency_ms": 1}}}})
    assert set(DEFAULT_BUDGETS) >= {"control", "navigation", "perception", "llm", "communication", "task"}
