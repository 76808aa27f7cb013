"""The parts resolver: built-in names, entry points and ``module:attr`` strings, one way.

Every replaceable thing in an rtvla stack is a *part* of one of five kinds (:data:`KINDS`):
a robot, a camera, a detector, a planner or a policy. Config names a part by a *spec*:

* a built-in name (``"sim"``, ``"opencv"``, ``"color"``, ``"rules"`` ...; :data:`BUILTINS`),
* the name of an entry point in the kind's group (``rtvla.robots``, ``rtvla.cameras``,
  ``rtvla.detectors``, ``rtvla.planners``, ``rtvla.policies``) that an installed
  distribution declares, found through :func:`importlib.metadata.entry_points`,
* or an explicit ``"package.module:factory"`` string.

A factory is any callable that builds the part. It may declare its options as a pydantic
model (``factory.Options`` or ``factory.options_model``); the resolver validates the part's
options table with it, so a mistake names the part and the field
(``robot.options.port: Field required``). A factory without a model has its keyword
parameters checked instead. Context the runtime offers (``recorder=``, ``clock=``,
``placement=`` ...) reaches a factory only where its signature names that parameter.

Built-ins are stored as ``module:attr`` strings and imported only when used, so importing
this module stays cheap and imports nothing but ``errors`` and ``config``.

Usage::

    ref = resolve("robot", "sim")              # PartRef(name="sim", origin="built-in", ...)
    emb = build("robot", "kinematic_arm", {"rate_hz": 200}, expect=Embodiment)
    factory = FactoryRef.of(ref, {"lockstep": False})   # picklable: the control process
    robot = factory(placement="process")                 # imports and builds it there
    for ref in available("detector"):
        print(ref.name, ref.origin)
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from rtvla.config import format_validation_error
from rtvla.errors import ConfigError, PartError

__all__ = [
    "BUILTINS",
    "GROUPS",
    "KINDS",
    "FactoryRef",
    "PartRef",
    "available",
    "build",
    "call_factory",
    "check_kind",
    "check_type",
    "options_model",
    "resolve",
    "validate_options",
]

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("robot", "camera", "detector", "planner", "policy")

#: The entry-point group each kind is declared in.
GROUPS: dict[str, str] = {
    "robot": "rtvla.robots",
    "camera": "rtvla.cameras",
    "detector": "rtvla.detectors",
    "planner": "rtvla.planners",
    "policy": "rtvla.policies",
}

#: Built-in parts per kind: name -> ``module:attr`` (imported on use only).
BUILTINS: dict[str, dict[str, str]] = {
    "robot": {
        "sim": "rtvla.robots.sim.embodiment:make_sim",
        "ros2": "rtvla.robots.ros2:make_robot",
    },
    "camera": {
        "opencv": "rtvla.perception.sources:OpenCVSource",
        "synthetic": "rtvla.perception.synthetic:SyntheticSource",
    },
    "detector": {
        "color": "rtvla.perception.color:ColorDetector",
        "onnx": "rtvla.perception.onnx_detector:OnnxDetector",
    },
    "planner": {
        "rules": "rtvla.language.rules:RulePlanner",
        "openai": "rtvla.language.openai_planner:OpenAIPlanner",
    },
    # The policy package registers its built-ins here when it lands.
    "policy": {},
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

ORIGIN_BUILTIN = "built-in"
ORIGIN_MODULE = "module path"
ORIGIN_OBJECT = "Python object"


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else :class:`PartError` listing them."""
    if kind not in GROUPS:
        raise PartError(f"unknown part kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class PartRef:
    """Where a part comes from and how to import it.

    ``origin`` is ``"built-in"``, ``"entry point of <distribution> <version>"``,
    ``"module path"`` or ``"Python object"``; ``target`` is ``"module:attr"``.
    """

    kind: str
    name: str
    origin: str
    target: str
    distribution: str | None = None
    shadowed_by: str | None = None  # an entry point hidden by a built-in of the same name
    _obj: Any = field(default=None, repr=False, compare=False)

    @property
    def module(self) -> str:
        return self.target.split(":", 1)[0]

    @property
    def label(self) -> str:
        """``robot 'sim' (built-in)``: how messages name this part."""
        return f"{self.kind} {self.name!r} ({self.origin})"

    def load(self) -> Callable[..., Any]:
        """Import the factory; :class:`PartError` names the module that failed and why."""
        if self._obj is not None:
            return self._obj
        module_name, attr = self.target.split(":", 1)
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:  # any import-time failure of a plug-in is a part error
            raise PartError(
                f"{self.label}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        for piece in attr.split("."):
            try:
                obj = getattr(obj, piece)
            except AttributeError:
                raise PartError(
                    f"{self.label}: module {module_name!r} has no attribute {attr!r}"
                ) from None
        if not callable(obj):
            raise PartError(f"{self.label}: {self.target} is a {type(obj).__name__}, not a factory")
        return obj

    def options_model(self) -> type[BaseModel] | None:
        """The factory's options model, if it declares one (imports the factory)."""
        return options_model(self.load())

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "name": self.name, "origin": self.origin, "target": self.target,
               "distribution": self.distribution}
        if self.shadowed_by:
            out["shadowed_by"] = self.shadowed_by
        return out


def _entry_point_refs(kind: str) -> list[PartRef]:
    group = GROUPS[kind]
    refs: list[PartRef] = []
    try:
        eps = importlib.metadata.entry_points(group=group)
    except Exception as exc:  # a broken dist-info somewhere on sys.path
        logger.warning("could not read entry points of group %s: %s", group, exc)
        return refs
    for ep in eps:
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        origin = (f"entry point of {dist_name} {dist.version}" if dist is not None
                  else f"entry point of group {group}")
        shadow = ORIGIN_BUILTIN if ep.name in BUILTINS[kind] else None
        refs.append(PartRef(kind, ep.name, origin, ep.value.replace(" ", ""), dist_name, shadow))
    return refs


def available(kind: str | None = None) -> list[PartRef]:
    """Every part of ``kind`` (or of every kind): built-ins first, then entry points."""
    kinds = KINDS if kind is None else (check_kind(kind),)
    out: list[PartRef] = []
    for k in kinds:
        out.extend(PartRef(k, n, ORIGIN_BUILTIN, t) for n, t in BUILTINS[k].items())
        out.extend(sorted(_entry_point_refs(k), key=lambda r: (r.name, r.distribution or "")))
    return out


def _names(kind: str) -> str:
    names = sorted({r.name for r in available(kind)})
    return ", ".join(names) or "none"


def resolve(kind: str, spec: Any) -> PartRef:
    """The :class:`PartRef` that ``spec`` names for ``kind`` (nothing is imported yet).

    ``spec``: a built-in name, an entry-point name, ``"package.module:factory"``, or a
    callable (from the Python API). Raises :class:`PartError` for an unknown name (listing
    what is available), a malformed spec, or a name two distributions both declare.
    """
    check_kind(kind)
    if callable(spec) and not isinstance(spec, str):
        mod = getattr(spec, "__module__", None) or "?"
        qual = getattr(spec, "__qualname__", None) or type(spec).__name__
        return PartRef(kind, qual, ORIGIN_OBJECT, f"{mod}:{qual}", _obj=spec)
    if not isinstance(spec, str) or not spec.strip():
        raise PartError(f"{kind}: a part is named by a string (a built-in name, an entry point or "
                        f"'package.module:factory'), got {spec!r}; available: {_names(kind)}")
    spec = spec.strip()
    if ":" in spec:
        if not _TARGET.match(spec):
            raise PartError(f"{kind} {spec!r}: a module path must look like 'package.module:factory'")
        return PartRef(kind, spec, ORIGIN_MODULE, spec)
    if not _NAME.match(spec):
        raise PartError(f"{kind} {spec!r}: not a valid part name; available: {_names(kind)}")
    if spec in BUILTINS[kind]:
        return PartRef(kind, spec, ORIGIN_BUILTIN, BUILTINS[kind][spec])
    found = [r for r in _entry_point_refs(kind) if r.name == spec]
    if len(found) > 1:
        raise PartError(
            f"{kind} {spec!r} is declared by several distributions: "
            + "; ".join(f"{r.distribution} ({r.target})" for r in found)
            + f". Name one with 'package.module:factory' (group {GROUPS[kind]})"
        )
    if found:
        return found[0]
    raise PartError(
        f"unknown {kind} {spec!r}; available: {_names(kind)} "
        f"(or an entry point in group {GROUPS[kind]!r}, or 'package.module:factory')"
    )


def options_model(factory: Any) -> type[BaseModel] | None:
    """``factory.Options`` or ``factory.options_model`` when it is a pydantic model class."""
    for attr in ("Options", "options_model"):
        model = getattr(factory, attr, None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model
    return None


def _signature(factory: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):  # builtins and some C callables have none
        return None


def validate_options(factory: Any, options: Mapping[str, Any] | None, *, where: str) -> dict[str, Any]:
    """The keyword arguments ``options`` give ``factory``, validated.

    With an options model: validated by it (``where.field: message``), returned as its
    fields. Without: names checked against the factory's keyword parameters.
    """
    opts = dict(options or {})
    model = options_model(factory)
    if model is not None:
        try:
            validated = model.model_validate(opts)
        except ValidationError as exc:
            raise PartError(format_validation_error(where, exc)) from None
        return {name: getattr(validated, name) for name in type(validated).model_fields}
    sig = _signature(factory)
    if sig is None:
        return opts
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return opts
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in opts:
        if key not in accepted:
            raise PartError(f"{where}.{key}: unknown option (got {opts[key]!r}); "
                            f"accepted: {', '.join(accepted) or 'none'}")
    return opts


def _context_for(factory: Any, context: Mapping[str, Any], taken: Mapping[str, Any]) -> dict[str, Any]:
    """The context entries the factory names as parameters. Never through ``**kwargs``: a
    factory asks for context by name, so its options never mix with the runtime's."""
    sig = _signature(factory)
    if sig is None:
        return {}
    params = sig.parameters
    return {k: v for k, v in context.items()
            if k in params and k not in taken
            and params[k].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _required_missing(factory: Any, kwargs: Mapping[str, Any]) -> list[str]:
    sig = _signature(factory)
    if sig is None:
        return []
    return [n for n, p in sig.parameters.items()
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and n not in kwargs]


def _protocol_members(proto: type) -> list[str]:
    """Attribute and method names a ``typing.Protocol`` class declares (not its bases')."""
    skip = {"__annotations__", "__dict__", "__doc__", "__module__", "__weakref__", "__init__",
            "__abstractmethods__", "__parameters__", "__orig_bases__", "__protocol_attrs__",
            "__subclasshook__", "__non_callable_proto_members__", "__class_getitem__",
            "__init_subclass__", "__slots__", "__qualname__", "__type_params__"}
    names: set[str] = set()
    for base in proto.__mro__:
        if base is object or base.__name__ in ("Protocol", "Generic"):
            continue
        names.update(getattr(base, "__annotations__", {}))
        names.update(k for k in vars(base) if not k.startswith("_abc_"))
    return sorted(n for n in names if n not in skip and n not in ("_is_protocol", "_is_runtime_protocol"))


def check_type(obj: Any, expect: Any, label: str) -> None:
    """Raise :class:`PartError` unless ``obj`` is an ``expect`` (a class, a Protocol or a
    tuple of them; for a Protocol every declared member must be present)."""
    options = expect if isinstance(expect, tuple) else (expect,)
    problems: list[str] = []
    for exp in options:
        if getattr(exp, "_is_protocol", False):
            missing = [m for m in _protocol_members(exp) if not hasattr(obj, m)]
            if not missing:
                return
            problems.append(f"{exp.__name__} (missing {', '.join(missing)})")
        elif isinstance(exp, type):
            if isinstance(obj, exp):
                return
            problems.append(exp.__name__)
        else:
            raise TypeError(f"expect must be a class, a Protocol or a tuple of them, got {exp!r}")
    raise PartError(f"{label}: the factory returned a {type(obj).__name__}, "
                    f"expected {' or '.join(problems)}")


def call_factory(ref: PartRef, options: Mapping[str, Any] | None, *, where: str | None = None,
                 expect: Any = None, **context: Any) -> Any:
    """Load ``ref``'s factory, validate ``options``, call it with the context it accepts."""
    factory = ref.load()
    where = where or f"{ref.kind}.options"
    kwargs = validate_options(factory, options, where=where)
    kwargs.update(_context_for(factory, context, kwargs))
    missing = _required_missing(factory, kwargs)
    if missing:
        raise PartError("; ".join(f"{where}.{m}: Field required" for m in missing)
                        + f" ({ref.label})")
    try:
        obj = factory(**kwargs)
    except PartError:
        raise
    except ConfigError as exc:
        # The part's own validation (beyond its options model) names the field already.
        raise PartError(f"{ref.label}: {exc}") from exc
    except ValidationError as exc:
        raise PartError(f"{ref.label}: " + format_validation_error(where, exc)) from exc
    if expect is not None:
        check_type(obj, expect, f"{ref.label} from {ref.target}")
    return obj


def build(kind: str, spec: Any, options: Mapping[str, Any] | None = None, *,
          expect: Any = None, where: str | None = None, **context: Any) -> Any:
    """Resolve ``spec``, validate ``options`` and build the part (before anything starts).

    ``expect``: the class or Protocol (or a tuple) the result must satisfy. ``where``: how
    option errors name the table (default ``"<kind>.options"``). ``context``: keyword
    arguments the runtime offers (``recorder``, ``clock``, ``placement``...), passed only to
    factories whose signature accepts them. Every failure is a :class:`PartError`.
    """
    return call_factory(resolve(kind, spec), options, where=where, expect=expect, **context)


@dataclass(frozen=True)
class FactoryRef:
    """A picklable way to build a part elsewhere: ``target`` (``module:attr``) plus options.

    The control process receives one of these instead of a class: calling it imports the
    target, validates the options with the factory's model and builds the part.
    """

    target: str
    options: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "robot"
    where: str | None = None

    def __post_init__(self) -> None:
        if not _TARGET.match(self.target):
            raise PartError(f"FactoryRef target must look like 'package.module:factory', got {self.target!r}")
        check_kind(self.kind)
        object.__setattr__(self, "options", dict(self.options))

    @classmethod
    def of(cls, ref: PartRef, options: Mapping[str, Any] | None = None, *,
           where: str | None = None) -> FactoryRef:
        if ref.origin == ORIGIN_OBJECT and "<locals>" in ref.target:
            raise PartError(f"{ref.label}: a locally defined factory cannot be rebuilt in another "
                            "process; define it at module level")
        return cls(ref.target, dict(options or {}), ref.kind, where)

    def ref(self) -> PartRef:
        return PartRef(self.kind, self.target, ORIGIN_MODULE, self.target)

    def __call__(self, **context: Any) -> Any:
        return call_factory(self.ref(), self.options, where=self.where, **context)
