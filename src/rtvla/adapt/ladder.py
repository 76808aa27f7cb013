"""``QualityLadder``: ordered quality levels over components' knobs, 0 = full quality.

Each level is a complete setting of every knob the ladder touches; level ``k`` differs from
``k - 1`` by the step written for it (steps are cumulative). A ladder is checked once, when
built: every component, knob and value must exist, and no level may set a *critical*
component's rate knob below the rate in its budget (critical components keep their rate).

Two ways to build one::

    # explicit steps, "component.knob" -> value, each on top of the previous level
    ladder = QualityLadder(components, [
        {"llm.cache": True},
        {"perception.skip_frames": 1, "llm.model": "small"},
        {"perception.resolution": (480, 360)},
        {"perception.resolution": (320, 240), "perception.skip_frames": 2},
    ])
    # or derived from the knobs the components declare (cheapest quality loss first)
    ladder = QualityLadder.auto(components)
    ladder.apply(2)          # turns the knobs; returns what changed
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rtvla.component import Component, Knob
from rtvla.errors import ConfigError

__all__ = ["RATE_KNOBS", "KnobChange", "QualityLadder", "QualityLevel", "rate_allowed"]

logger = logging.getLogger(__name__)

#: Knob names that set a component's loop rate in Hz; guarded for critical components.
RATE_KNOBS = frozenset({"rate_hz", "rate"})


@dataclass(frozen=True)
class QualityLevel:
    """One rung: ``settings`` is every ladder knob's value, ``changes`` what differs from the
    rung above."""

    index: int
    name: str
    settings: Mapping[str, Any]
    changes: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "settings": _jsonable(self.settings),
                "changes": _jsonable(self.changes)}


@dataclass(frozen=True)
class KnobChange:
    """A knob that :meth:`QualityLadder.apply` turned (``error`` when its callback failed)."""

    knob: str
    old: Any
    new: Any
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = {"knob": self.knob, "old": _jsonable(self.old), "new": _jsonable(self.new)}
        if self.error:
            d["error"] = self.error
        return d


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, tuple) and all(isinstance(x, int) for x in v):
        return "x".join(str(x) for x in v)
    return str(v)


class QualityLadder:
    """Quality levels over the knobs of ``components``. See the module docstring."""

    def __init__(
        self,
        components: Iterable[Component],
        steps: Sequence[Mapping[str, Any]],
        *,
        names: Sequence[str] | None = None,
    ) -> None:
        self.components: dict[str, Component] = {}
        for c in components:
            if c.name in self.components:
                raise ConfigError(f"quality ladder: two components named {c.name!r}")
            self.components[c.name] = c
        if names is not None and len(names) != len(steps):
            raise ConfigError(f"quality ladder: {len(names)} names for {len(steps)} steps")
        resolved: list[dict[str, Any]] = []
        for i, step in enumerate(steps, start=1):
            if not isinstance(step, Mapping) or not step:
                raise ConfigError(f"quality ladder level {i}: a step must be a non-empty table, got {step!r}")
            resolved.append({key: self._check(i, key, value) for key, value in step.items()})
        touched = sorted({k for step in resolved for k in step})
        current = {k: self._knob(k).values[0] for k in touched}
        levels = [QualityLevel(0, "full quality", dict(current), {})]
        for i, step in enumerate(resolved, start=1):
            changes = {k: v for k, v in step.items() if current[k] != v}
            if not changes:
                raise ConfigError(f"quality ladder level {i}: {dict(step)!r} changes nothing")
            current.update(changes)
            name = names[i - 1] if names is not None else ", ".join(f"{k}={_fmt(v)}" for k, v in changes.items())
            levels.append(QualityLevel(i, name, dict(current), changes))
        self.levels: tuple[QualityLevel, ...] = tuple(levels)

    # -- construction helpers -------------------------------------------------------------

    def _knob(self, key: str) -> Knob:
        comp_name, sep, knob_name = key.rpartition(".")
        if not sep or not comp_name:
            raise ConfigError(f"quality ladder: knob {key!r} must be written 'component.knob'")
        comp = self.components.get(comp_name)
        if comp is None:
            raise ConfigError(
                f"quality ladder: unknown component {comp_name!r} in {key!r}; known: {sorted(self.components)}"
            )
        knob = comp.knobs.get(knob_name)
        if knob is None:
            raise ConfigError(
                f"quality ladder: component {comp_name!r} has no knob {knob_name!r}; knobs: {sorted(comp.knobs)}"
            )
        return knob

    def _check(self, level: int, key: str, value: Any) -> Any:
        knob = self._knob(key)
        if value not in knob.values and isinstance(value, list) and tuple(value) in knob.values:
            value = tuple(value)  # TOML has arrays, knobs often hold tuples (resolutions)
        if value not in knob.values:
            raise ConfigError(
                f"quality ladder level {level}: {key} has no value {value!r}; allowed: {list(knob.values)}"
            )
        comp = self.components[key.rpartition(".")[0]]
        if not rate_allowed(comp, knob, value):
            raise ConfigError(
                f"quality ladder level {level}: {key}={value!r} is below the budget rate "
                f"{comp.budget.rate_hz} Hz of critical component {comp.name!r}; critical "
                "components keep their rate"
            )
        return value

    @classmethod
    def auto(cls, components: Iterable[Component]) -> QualityLadder:
        """A ladder from the components' own knobs, one knob step per level.

        Order (cheapest quality loss first): non-critical components' caches, then their
        other knobs (model, rate, buffers); then critical components' frame skipping and
        buffers, then their resolution and model, and last their rate, never below budget.
        Within a tier the knobs take turns, so quality falls evenly.
        """
        comps = list(components)
        tiers: dict[int, list[tuple[str, list[Any]]]] = {}
        for comp in comps:
            for knob in comp.knobs.values():
                allowed = [v for v in knob.values if rate_allowed(comp, knob, v)]
                if len(allowed) < 2:
                    continue
                # Values are ordered best first; the rungs below the current best allowed one.
                tiers.setdefault(_tier(comp, knob.name), []).append((f"{comp.name}.{knob.name}", allowed[1:]))
        steps: list[dict[str, Any]] = []
        for tier in sorted(tiers):
            queues = [(key, list(vals)) for key, vals in tiers[tier]]
            while any(vals for _, vals in queues):
                for key, vals in queues:
                    if vals:
                        steps.append({key: vals.pop(0)})
        return cls(comps, steps)

    # -- use ------------------------------------------------------------------------------

    @property
    def max_level(self) -> int:
        return len(self.levels) - 1

    def level(self, index: int) -> QualityLevel:
        if not 0 <= index <= self.max_level:
            raise ConfigError(f"quality level must be in [0, {self.max_level}], got {index}")
        return self.levels[index]

    def apply(self, index: int) -> list[KnobChange]:
        """Set every ladder knob to its value at level ``index``; returns the knobs that moved.

        A knob whose ``on_change`` callback raises is reported in the change's ``error`` and
        the other knobs still turn.
        """
        target = self.level(index)
        out: list[KnobChange] = []
        for key, value in target.settings.items():
            knob = self._knob(key)
            old = knob.value
            if old == value:
                continue
            try:
                knob.set_value(value)
                out.append(KnobChange(key, old, value))
            except Exception as exc:  # a component's callback failing must not stop the others
                logger.exception("turning knob %s to %r failed", key, value)
                out.append(KnobChange(key, old, value, error=f"{type(exc).__name__}: {exc}"))
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [lv.as_dict() for lv in self.levels]


def rate_allowed(comp: Component, knob: Knob, value: Any) -> bool:
    """False when ``value`` would set a critical component's rate knob below its budget."""
    if knob.name not in RATE_KNOBS or not comp.budget.critical or comp.budget.rate_hz is None:
        return True
    try:
        return float(value) >= comp.budget.rate_hz - 1e-9
    except (TypeError, ValueError):
        return False


_CHEAP = ("cache",)
_NON_CRITICAL = ("model", "max_tokens", "rate", "buffer", "queue", "history")
_CRIT_LIGHT = ("skip", "buffer", "queue", "history", "batch")
_CRIT_HEAVY = ("resolution", "model", "size", "precision", "quant")


def _tier(comp: Component, knob: str) -> int:
    name = knob.lower()
    if not comp.budget.critical:
        if any(s in name for s in _CHEAP):
            return 0
        return 1 if any(s in name for s in _NON_CRITICAL) else 2
    if name in RATE_KNOBS:
        return 6
    if any(s in name for s in _CRIT_LIGHT):
        return 3
    return 4 if any(s in name for s in _CRIT_HEAVY) else 5
