"""Property tests: any ``rtvla.toml`` either loads and passes every section's check, or fails
with a ConfigError whose message names the field (or section) that is wrong.

Tables are random but shaped like real ones: mostly the sections and field names each
package declares, with values of every TOML type, nested tables where scalars belong, unknown
keys and unknown sections; they are written as TOML files and read back through
``load_config`` (and, for a few, through ``RTVLA_*`` environment overrides), then checked with
``validate_sections`` as ``rtvla config check`` does.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rtvla.action.control import ControlSettings
from rtvla.action.navigation import NavigatorConfig
from rtvla.action.skills import SkillSettings
from rtvla.adapt.config import AdaptConfig
from rtvla.config import BUILTIN_COMPONENTS, SECTIONS, Budget, Config, load_config
from rtvla.errors import ConfigError
from rtvla.language.settings import LLMSettings
from rtvla.perception.settings import CamerasConfig, PerceptionConfig
from rtvla.resources.config import ResourcesConfig
from rtvla.runtime.settings import RuntimeSettings, validate_sections

_MODELS = {
    "runtime": RuntimeSettings, "control": ControlSettings, "navigation": NavigatorConfig,
    "executor": SkillSettings, "perception": PerceptionConfig, "cameras": CamerasConfig,
    "llm": LLMSettings, "resources": ResourcesConfig, "adapt": AdaptConfig,
}
FIELDS: dict[str, list[str]] = {name: sorted(model.model_fields) for name, model in _MODELS.items()}
FIELDS["robot"] = ["type", "options"]
BUDGET_FIELDS = sorted(Budget.model_fields)


def _toml_able(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_toml_able(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _toml_able(v) for k, v in value.items())
    return False


# Each field's default, where TOML can write it: a value that is right for that field.
DEFAULTS: dict[tuple[str, str], Any] = {
    (name, field): (list(info.default) if isinstance(info.default, tuple) else info.default)
    for name, model in _MODELS.items() for field, info in model.model_fields.items()
    if _toml_able(info.default)
}

# --- strategies ------------------------------------------------------------------------------

_key = st.text(st.characters(codec="ascii", categories=("L", "N"), include_characters="_-"),
               min_size=1, max_size=8)
# No ':' in strings: "package.module:factory" would make the part resolver import a module.
_string = st.text(st.characters(codec="utf-8", exclude_characters=":", exclude_categories=("Cs",)),
                  max_size=12)
_scalar = (st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([0, 1, -1, 0.5, 30, 100.0, 1e9, "sim", "color", "onnx", "rules", "auto",
                              "thread", "process", "", "off", "127.0.0.1"]) | _string)
_value = st.recursive(_scalar, lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(_key, kids, max_size=3), max_leaves=6)


def _mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``common`` nine times in ten, else ``rare``."""
    return st.integers(0, 9).flatmap(lambda i: rare if i == 0 else common)


@st.composite
def field_values(draw: st.DrawFn, section: str, field: str) -> Any:
    if (section, field) in DEFAULTS and draw(st.booleans()):
        return DEFAULTS[(section, field)]
    return draw(_value)


@st.composite
def section_tables(draw: st.DrawFn, name: str) -> dict[str, Any]:
    if name == "budgets":
        table: dict[str, Any] = {}
        for comp in draw(st.lists(st.sampled_from([*BUILTIN_COMPONENTS, "other", "custom"]) | _key,
                                  max_size=3, unique=True)):
            if comp == "custom":
                table[comp] = {draw(_key): draw(st.dictionaries(st.sampled_from(BUDGET_FIELDS) | _key,
                                                                _value, max_size=3))}
            else:
                table[comp] = draw(st.dictionaries(st.sampled_from(BUDGET_FIELDS) | _key, _value,
                                                   max_size=3) | _scalar)
        return table
    if name not in FIELDS:
        return draw(st.dictionaries(_key, _value, max_size=3))
    keys = draw(st.lists(_mostly(st.sampled_from(FIELDS[name]), _key), max_size=4, unique=True))
    return {k: draw(field_values(name, k)) for k in keys}


@st.composite
def config_tables(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(_mostly(st.sampled_from(SECTIONS), _key), max_size=4, unique=True))
    data: dict[str, Any] = {}
    for name in names:
        data[name] = draw(_mostly(section_tables(name), _scalar))
    return data


# --- TOML out ----------------------------------------------------------------------------------


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, once DEL (raw in JSON) is escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(data: dict[str, Any]) -> str:
    """Top-level tables as ``[name]`` with inline tables below; scalars before any table."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{_toml_key(name)}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --- the property ------------------------------------------------------------------------------


def _names_in(data: Any, prefix: str = "") -> set[str]:
    """Every key of ``data`` and every dotted path to one."""
    out: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            out |= {str(k), path} | _names_in(v, path)
    return out


def _check(data: dict[str, Any], load: Any) -> Config | None:
    try:
        cfg = load()
        validate_sections(cfg)
    except ConfigError as exc:
        msg = str(exc)
        names = _names_in(data)
        # It names a section or field of this table, as a whole word ("llm.temperature: ...",
        # "[robot] must be a table", "unknown config section 'x'", "budgets.custom.y ...").
        assert any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", msg) for n in names), msg
        return None
    return cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=config_tables())
def test_random_config_files_load_or_name_the_field(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "rtvla.toml")
        path.write_text(to_toml(data), encoding="utf-8")
        cfg = _check(data, lambda: load_config(path, environ={}, search_cwd=False))
    if cfg is not None:
        for name, table in data.items():  # what loaded is what was written
            if name != "budgets" and name in cfg.sections:
                assert cfg.section(name).keys() == table.keys()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=st.dictionaries(
    st.tuples(_mostly(st.sampled_from([s for s in SECTIONS if s in FIELDS]), _key),
              st.sampled_from(sorted({f for fs in FIELDS.values() for f in fs})) | _key),
    st.sampled_from(["1", "0", "-3", "2.5", "true", "nan", "inf", "sim", "[1, 2]", "{a = 1}", "", "'x'"])
    | _string.filter(lambda v: "\x00" not in v), min_size=1, max_size=3))
def test_environment_overrides_load_or_name_the_field(overrides: dict[tuple[str, str], str]) -> None:
    """``RTVLA_SECTION__FIELD=value`` overrides: the same property, values parsed as TOML.

    Names that start or end with ``_`` cannot be spelled unambiguously around the ``__``
    separator (``RTVLA____X`` is section ``_`` or field ``_x``), so they are left out."""
    assume(all(not n.startswith("_") and not n.endswith("_") for key in overrides for n in key))
    environ = {f"RTVLA_{sec.upper()}__{field.upper()}": v for (sec, field), v in overrides.items()}
    data: dict[str, Any] = {}
    for (sec, field) in overrides:
        data.setdefault(sec.lower(), {})[field.lower()] = True
    _check(data, lambda: load_config(None, environ=environ, search_cwd=False))
