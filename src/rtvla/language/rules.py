"""The embedded rule planner: offline, deterministic, and honest about what it does not know.

It understands the common instructions ("go to the kitchen", "pick up the red cube", "put
the red cube in the blue bin", "bring the green cube to the table", "look for the blue bin",
"say hello") and sequences of them joined by "and" / "then" / commas. Words are mapped to
scene names through the :class:`Capabilities` (``red cube`` -> ``red_cube``), never through
a list written here. Anything else, any negation, and any unknown thing is refused with a
:class:`PlannerRefusal` that says why.

Usage::

    plan = await RulePlanner().plan("put the red cube in the blue bin", PlanContext())
    plan.summary()
    # navigate(table) -> perceive(red_cube) -> manipulate(pick red_cube)
    #   -> navigate(kitchen) -> manipulate(place red_cube -> blue_bin)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rtvla.errors import PlannerRefusal, PlanValidationError
from rtvla.language.schema import Action, Capabilities, Plan, PlanContext, validate_plan

__all__ = ["NEGATION_WORDS", "RulePlanner", "is_negated"]

#: Words that turn an instruction into its opposite; the rule planner refuses them and the
#: semantic cache never matches across them.
NEGATION_WORDS = frozenset({
    "not", "no", "never", "dont", "don't", "doesnt", "doesn't", "without", "avoid", "stop",
    "cannot", "can't", "cant", "nor", "neither", "refrain", "isnt", "isn't", "mustnt",
    "mustn't", "shouldnt", "shouldn't", "wont", "won't",
})

_WORD_RE = re.compile(r"[a-z0-9']+")
_QUOTE_RE = re.compile(r"\"([^\"]*)\"|“([^”]*)”|'([^']+)'(?=\s|$|[,.;!?])")
_SPLIT_RE = re.compile(
    r"\s*(?:[,;]\s*(?:and\s+then|then|and|after\s+that|afterwards)?|"
    r"\.\s+|\b(?:and\s+then|then|and|after\s+that|afterwards)\b)\s*",
    re.IGNORECASE,
)
_POLITE_RE = re.compile(r"^(?:please\s+|could\s+you\s+|can\s+you\s+|would\s+you\s+|robot\s*,?\s+|"
                        r"now\s+|first\s+|finally\s+|next\s+)+", re.IGNORECASE)
_TRAIL_RE = re.compile(r"[\s.!?]*(?:\s+please)?[\s.!?]*$", re.IGNORECASE)

_GO = re.compile(r"^(?:go|navigate|move|drive|head|travel|return|come|walk)"
                 r"(?:\s+back)?(?:\s+(?:to|towards|toward|over\s+to|into))?\s+(?P<x>.+)$", re.I)
_PICK = re.compile(r"^(?:pick\s+up|pick|grab|grasp|take|lift|get|fetch)\s+(?P<x>.+?)(?:\s+up)?$", re.I)
_PUT = re.compile(r"^(?:put|place|drop|dump|throw|toss|stow|deposit|set)\s+(?P<x>.+?)"
                  r"\s+(?:in|into|inside|on|onto|on\s+top\s+of|at|to)\s+(?P<y>.+)$", re.I)
_BRING = re.compile(r"^(?:bring|take|carry|move|deliver|transport|fetch)\s+(?P<x>.+?)"
                    r"\s+(?:to|into|in|onto|on)\s+(?P<y>.+)$", re.I)
_LOOK = re.compile(r"^(?:look\s+for|look\s+at|search\s+for|find|locate|detect|spot|perceive|"
                   r"check\s+on|check)\s+(?P<x>.+)$", re.I)
_SAY = re.compile(r"^(?:say|tell\s+(?:me|them|us|everyone)|announce|speak|report)"
                  r"(?:\s*[:,])?\s+(?P<x>.+)$", re.I)
_PRONOUNS = frozenset({"it", "that", "this", "them", "the object", "the thing"})


def is_negated(text: str) -> bool:
    """True when the instruction contains a negation word ("do not pick up the red cube")."""
    return any(w in NEGATION_WORDS or w.endswith("n't") for w in _WORD_RE.findall(text.lower()))


@dataclass
class _State:
    caps: Capabilities
    at: str | None
    held: str | None
    last_object: str | None = None
    actions: list[Action] = field(default_factory=list)

    def add(self, kind: str, params: dict[str, Any], description: str) -> None:
        self.actions.append(Action.model_validate(
            {"type": kind, "parameters": params, "description": description}
        ))

    def go(self, place: str, why: str) -> None:
        if self.at != place:
            self.add("navigate", {"target": place}, why)
            self.at = place


class RulePlanner:
    """Deterministic planner for common instructions; see the module docstring.

    Args:
        capabilities: used when a call passes no context.
        perceive_before_pick: look at an object before picking it (the executor uses the
            newest detections to grasp).
    """

    name = "rules"

    def __init__(self, capabilities: Capabilities | None = None, *,
                 perceive_before_pick: bool = True) -> None:
        self.capabilities = capabilities or Capabilities.default()
        self.perceive_before_pick = perceive_before_pick

    async def plan(self, instruction: str, context: PlanContext | None = None) -> Plan:
        return self.plan_sync(instruction, context)

    def plan_sync(self, instruction: str, context: PlanContext | None = None) -> Plan:
        """The same as :meth:`plan`, without an event loop (it never waits on anything)."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise PlannerRefusal("empty instruction: tell the robot what to do")
        caps = context.capabilities if context is not None else self.capabilities
        at = context.robot_place if context is not None else None
        held = context.holding if context is not None else None
        if is_negated(instruction):
            raise PlannerRefusal(
                f"instruction contains a negation, which the rule planner does not act on: "
                f"{instruction.strip()!r}"
            )
        text, quotes = self._protect_quotes(instruction.strip())
        state = _State(caps, at, held)
        clauses = [c for c in _SPLIT_RE.split(text) if c and c.strip()]
        if not clauses:
            raise PlannerRefusal(f"no instruction found in {instruction!r}")
        for clause in clauses:
            self._clause(state, self._restore(clause, quotes), instruction)
        plan = Plan(actions=tuple(state.actions),
                    explanation=f"rule planner: {len(state.actions)} steps for {instruction.strip()!r}")
        try:
            validate_plan(plan, caps, robot_place=at, holding=held)
        except PlanValidationError as exc:
            raise PlannerRefusal(f"cannot plan {instruction.strip()!r}: {exc}") from None
        return plan

    # -- parsing ---------------------------------------------------------------------------

    @staticmethod
    def _protect_quotes(text: str) -> tuple[str, list[str]]:
        quotes: list[str] = []

        def keep(m: re.Match[str]) -> str:
            quotes.append(next(g for g in m.groups() if g is not None))
            return f"\x00{len(quotes) - 1}\x00"

        return _QUOTE_RE.sub(keep, text), quotes

    @staticmethod
    def _restore(clause: str, quotes: list[str]) -> str:
        return re.sub(r"\x00(\d+)\x00", lambda m: f"\x01{quotes[int(m.group(1))]}\x01", clause)

    def _thing(self, state: _State, phrase: str, instruction: str, *, want: tuple[str, ...]) -> str:
        phrase = phrase.strip().strip("\x01").strip()
        low = phrase.lower()
        if low in _PRONOUNS:
            if state.last_object is None:
                raise PlannerRefusal(f"{phrase!r} refers to nothing earlier in {instruction!r}")
            return state.last_object
        name = state.caps.resolve(low)
        if name is None:
            known = ", ".join(n for n, k in state.caps.names.items() if k in want)
            raise PlannerRefusal(f"unknown {' or '.join(want)} {phrase!r}; known: {known}")
        kind = state.caps.names[name]
        if kind not in want:
            raise PlannerRefusal(f"{phrase!r} is a {kind}, expected: {' or '.join(want)}")
        return name

    def _fetch(self, state: _State, obj: str) -> None:
        if state.held == obj:
            return
        if state.held is not None:
            raise PlannerRefusal(f"cannot pick {obj!r} while holding {state.held!r}")
        loc = state.caps.location_of(obj)
        if loc is not None:
            state.go(loc, f"go to the {loc} where the {obj.replace('_', ' ')} is")
        last = state.actions[-1] if state.actions else None
        seen = last is not None and last.type == "perceive" and last.parameters.target == obj  # type: ignore[union-attr]
        if self.perceive_before_pick and not seen:
            state.add("perceive", {"target": obj}, f"locate the {obj.replace('_', ' ')}")
        state.add("manipulate", {"operation": "pick", "object": obj},
                  f"pick up the {obj.replace('_', ' ')}")
        state.held = obj
        state.last_object = obj

    def _deliver(self, state: _State, obj: str, dest: str) -> None:
        self._fetch(state, obj)
        loc = state.caps.location_of(dest)
        if loc is not None:
            state.go(loc, f"go to the {loc}")
        prep = "into" if dest in state.caps.receptacles else "onto"
        state.add("manipulate", {"operation": "place", "object": obj, "destination": dest},
                  f"place the {obj.replace('_', ' ')} {prep} the {dest.replace('_', ' ')}")
        state.held = None
        state.last_object = obj

    def _clause(self, state: _State, clause: str, instruction: str) -> None:
        c = _TRAIL_RE.sub("", _POLITE_RE.sub("", clause.strip()))
        if not c:
            return
        m = _SAY.match(c)
        if m:
            text = m.group("x").replace("\x01", "").strip()
            if not text:
                raise PlannerRefusal(f"nothing to say in {clause!r}")
            state.add("communicate", {"text": text}, "say it")
            return
        if "\x01" in c:
            raise PlannerRefusal(f"quoted text is only understood after 'say': {clause!r}")
        dest_kinds = ("receptacle", "place")
        m = _PUT.match(c) or _BRING.match(c)
        if m:
            obj = self._thing(state, m.group("x"), instruction, want=("object",))
            dest = self._thing(state, m.group("y"), instruction, want=dest_kinds)
            self._deliver(state, obj, dest)
            return
        m = _PICK.match(c)
        if m:
            obj = self._thing(state, m.group("x"), instruction, want=("object",))
            self._fetch(state, obj)
            return
        m = _LOOK.match(c)
        if m:
            target = self._thing(state, m.group("x"), instruction,
                                 want=("object", "receptacle", "place"))
            loc = state.caps.location_of(target)
            if loc is not None:
                state.go(loc, f"go to the {loc}")
            if target not in state.caps.places:
                state.add("perceive", {"target": target}, f"look for the {target.replace('_', ' ')}")
                if target in state.caps.objects:
                    state.last_object = target
            return
        m = _GO.match(c)
        if m:
            place = self._thing(state, m.group("x"), instruction,
                                want=("place", "receptacle", "object"))
            loc = state.caps.location_of(place) or place
            if state.at == loc:
                # Already there: make the step explicit so that the plan is never empty.
                state.add("navigate", {"target": loc}, f"stay at the {loc}")
            state.go(loc, f"go to the {loc}")
            return
        raise PlannerRefusal(f"the rule planner does not understand {clause.strip()!r}")
