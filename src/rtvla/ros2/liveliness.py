"""rmw_zenoh's liveliness tokens: how a ROS 2 graph learns that a node or a topic endpoint exists.

Every node, publisher and subscription declares one Zenoh liveliness token whose key says
what it is (ros2/rmw_zenoh ``docs/design.md``, "Graph Cache"; the exact layout is
``liveliness::Entity`` in ``rmw_zenoh_cpp/src/detail/liveliness_utils.cpp``)::

    @ros2_lv/<domain>/<session id>/<node id>/<node id>/NN/<enclave>/<namespace>/<node name>
    @ros2_lv/<domain>/<session id>/<node id>/<entity id>/MP|MS/<enclave>/<namespace>/<node name>
        /<topic>/<dds type>/<type hash>/<qos>

with the enclave, namespace, node name and topic *mangled* (``/`` -> ``%``). The QoS chunk
is ``qos_to_keyexpr``'s compact form: each field is written only where it differs from
rmw_zenoh's defaults (reliable, volatile, keep-last, depth 42, infinite durations, automatic
liveliness), so the ROS default profile (depth 10) reads ``::,10:,:,:,,``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from rtvla.errors import Ros2Error
from rtvla.ros2.keys import (
    check_domain_id,
    check_type_hash,
    demangle,
    fully_qualified_name,
    mangle,
    normalize_namespace,
    ros_type_name,
)

__all__ = [
    "ADMIN_SPACE",
    "INFINITE",
    "Durability",
    "Entity",
    "EntityKind",
    "History",
    "Liveliness",
    "Qos",
    "Reliability",
    "graph_selector",
]

ADMIN_SPACE = "@ros2_lv"


class EntityKind(str, Enum):
    NODE = "NN"
    PUBLISHER = "MP"
    SUBSCRIPTION = "MS"
    SERVICE = "SS"
    CLIENT = "SC"


# The rmw_qos_*_policy_e values (ros2/rmw types.h); the token writes them as decimal numbers.
class Reliability(IntEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2


class Durability(IntEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2


class History(IntEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2


class Liveliness(IntEnum):
    SYSTEM_DEFAULT = 0
    AUTOMATIC = 1
    MANUAL_BY_TOPIC = 3


# RMW_DURATION_INFINITE as (sec, nsec): rmw_zenoh's default for deadline, lifespan and lease.
INFINITE = (9223372036, 854775807)


@dataclass(frozen=True)
class Qos:
    """A topic endpoint's QoS, as far as rmw_zenoh encodes it in the token.

    Defaults are ROS 2's default profile (``rmw_qos_profile_default``: reliable, volatile,
    keep-last 10). Durations are ``(sec, nsec)``; :data:`INFINITE` means "not set".
    """

    reliability: Reliability = Reliability.RELIABLE
    durability: Durability = Durability.VOLATILE
    history: History = History.KEEP_LAST
    depth: int = 10
    deadline: tuple[int, int] = INFINITE
    lifespan: tuple[int, int] = INFINITE
    liveliness: Liveliness = Liveliness.AUTOMATIC
    lease: tuple[int, int] = INFINITE

    def __post_init__(self) -> None:
        if not isinstance(self.depth, int) or self.depth < 0:
            raise Ros2Error(f"qos.depth must be an integer >= 0, got {self.depth!r}")
        for name in ("deadline", "lifespan", "lease"):
            v = getattr(self, name)
            if (not isinstance(v, tuple) or len(v) != 2 or any(not isinstance(x, int) or x < 0 for x in v)):
                raise Ros2Error(f"qos.{name} must be (sec, nsec) non-negative integers, got {v!r}")

    @classmethod
    def sensor_data(cls, depth: int = 5) -> Qos:
        """``rmw_qos_profile_sensor_data``: best effort, keep-last 5."""
        return cls(reliability=Reliability.BEST_EFFORT, depth=depth)

    def resolved(self) -> Qos:
        """SYSTEM_DEFAULT fields and depth 0 replaced the way rmw_zenoh's ``best_available_qos`` does."""
        return Qos(
            reliability=Reliability.RELIABLE if self.reliability == 0 else self.reliability,
            durability=Durability.VOLATILE if self.durability == 0 else self.durability,
            history=History.KEEP_LAST if self.history == 0 else self.history,
            depth=42 if self.depth == 0 else self.depth,
            deadline=INFINITE if self.deadline == (0, 0) else self.deadline,
            lifespan=INFINITE if self.lifespan == (0, 0) else self.lifespan,
            liveliness=Liveliness.AUTOMATIC if self.liveliness == 0 else self.liveliness,
            lease=INFINITE if self.lease == (0, 0) else self.lease,
        )

    def to_keyexpr(self) -> str:
        """rmw_zenoh's ``qos_to_keyexpr``: a field is written only if it differs from the default."""
        q = self.resolved()

        def f(value: int, default: int) -> str:
            return "" if value == default else str(int(value))

        return (f"{f(q.reliability, Reliability.RELIABLE)}:{f(q.durability, Durability.VOLATILE)}:"
                f"{f(q.history, History.KEEP_LAST)},{f(q.depth, 42)}:"
                f"{f(q.deadline[0], INFINITE[0])},{f(q.deadline[1], INFINITE[1])}:"
                f"{f(q.lifespan[0], INFINITE[0])},{f(q.lifespan[1], INFINITE[1])}:"
                f"{f(q.liveliness, Liveliness.AUTOMATIC)},{f(q.lease[0], INFINITE[0])},"
                f"{f(q.lease[1], INFINITE[1])}")

    @classmethod
    def from_keyexpr(cls, text: str) -> Qos:
        """Inverse of :meth:`to_keyexpr` (rmw_zenoh's ``keyexpr_to_qos``); Ros2Error if malformed."""
        parts = text.split(":")
        if len(parts) != 6:
            raise Ros2Error(f"QoS chunk {text!r} must have 6 ':'-separated fields, got {len(parts)}")
        hist, dl, ls, lv = (p.split(",") for p in parts[2:6])
        if len(hist) != 2 or len(dl) != 2 or len(ls) != 2 or len(lv) != 3:
            raise Ros2Error(f"QoS chunk {text!r}: history, deadline, lifespan need 2 ','-separated "
                            f"values and liveliness 3")

        def num(s: str, default: int) -> int:
            if s == "":
                return default
            if not s.isdigit():
                raise Ros2Error(f"QoS chunk {text!r}: {s!r} is not a non-negative integer")
            return int(s)

        try:
            return cls(
                reliability=Reliability(num(parts[0], Reliability.RELIABLE)),
                durability=Durability(num(parts[1], Durability.VOLATILE)),
                history=History(num(hist[0], History.KEEP_LAST)),
                depth=num(hist[1], 42),
                deadline=(num(dl[0], INFINITE[0]), num(dl[1], INFINITE[1])),
                lifespan=(num(ls[0], INFINITE[0]), num(ls[1], INFINITE[1])),
                liveliness=Liveliness(num(lv[0], Liveliness.AUTOMATIC)),
                lease=(num(lv[1], INFINITE[0]), num(lv[2], INFINITE[1])),
            )
        except ValueError as exc:  # an enum value rmw does not define
            raise Ros2Error(f"QoS chunk {text!r}: {exc}") from exc


@dataclass(frozen=True)
class Entity:
    """One ROS 2 graph entity, as a liveliness token describes it.

    ``namespace`` and ``enclave`` are ROS names (``"/"`` when unset); ``topic`` is fully
    qualified (``/chatter``); ``dds_type`` is the DDS type name; ``type_hash`` RIHS01 or
    ``TypeHashNotSupported``.
    """

    domain_id: int
    session_id: str
    node_id: int
    entity_id: int
    kind: EntityKind
    node_name: str
    namespace: str = "/"
    enclave: str = "/"
    topic: str | None = None
    dds_type: str | None = None
    type_hash: str | None = None
    qos: Qos = field(default_factory=Qos)

    def __post_init__(self) -> None:
        check_domain_id(self.domain_id)
        if not self.session_id or any(c in self.session_id for c in "/*$?#"):
            raise Ros2Error(f"liveliness session id must be a plain key chunk, got {self.session_id!r}")
        for name in ("node_id", "entity_id"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise Ros2Error(f"liveliness {name} must be an integer >= 0, got {v!r}")
        if not self.node_name or "/" in self.node_name or "%" in self.node_name:
            raise Ros2Error(f"node name must be a non-empty name without '/', got {self.node_name!r}")
        if self.kind is EntityKind.NODE:
            if self.topic is not None:
                raise Ros2Error("a node token carries no topic")
        else:
            if self.topic is None or self.dds_type is None or self.type_hash is None:
                raise Ros2Error(f"a {self.kind.name.lower()} token needs topic, dds_type and type_hash")
            fully_qualified_name(self.topic)  # validates; must already be absolute
            if not self.topic.startswith("/"):
                raise Ros2Error(f"entity topic must be fully qualified, got {self.topic!r}")
            ros_type_name(self.dds_type)
            check_type_hash(self.type_hash)

    def token(self) -> str:
        """The liveliness key expression, exactly as rmw_zenoh's ``Entity`` builds it."""
        ns = normalize_namespace(self.namespace)
        enclave = self.enclave or "/"
        parts = [ADMIN_SPACE, str(self.domain_id), self.session_id, str(self.node_id),
                 str(self.entity_id), self.kind.value, mangle(enclave), mangle(ns), mangle(self.node_name)]
        if self.kind is not EntityKind.NODE:
            assert self.topic is not None and self.dds_type is not None and self.type_hash is not None
            parts += [mangle(self.topic), mangle(self.dds_type), mangle(self.type_hash),
                      self.qos.to_keyexpr()]
        return "/".join(parts)

    @classmethod
    def parse(cls, key: str) -> Entity:
        """The entity a token describes, validated like rmw_zenoh's ``Entity::make(keyexpr)``."""
        parts = str(key).split("/")
        if len(parts) < 9:
            raise Ros2Error(f"liveliness token {key!r} has {len(parts)} chunks, needs at least 9")
        if any(p == "" for p in parts):
            raise Ros2Error(f"liveliness token {key!r} has an empty chunk")
        if parts[0] != ADMIN_SPACE:
            raise Ros2Error(f"liveliness token {key!r} is not under {ADMIN_SPACE}")
        try:
            kind = EntityKind(parts[5])
        except ValueError:
            raise Ros2Error(f"liveliness token {key!r}: unknown entity kind {parts[5]!r}") from None
        for i, what in ((1, "domain id"), (3, "node id"), (4, "entity id")):
            if not parts[i].isdigit():
                raise Ros2Error(f"liveliness token {key!r}: {what} {parts[i]!r} is not a number")
        common = dict(domain_id=int(parts[1]), session_id=parts[2], node_id=int(parts[3]),
                      entity_id=int(parts[4]), kind=kind, enclave=demangle(parts[6]),
                      namespace=demangle(parts[7]), node_name=demangle(parts[8]))
        if kind is EntityKind.NODE:
            if len(parts) != 9:
                raise Ros2Error(f"node token {key!r} must have 9 chunks, got {len(parts)}")
            return cls(**common)  # type: ignore[arg-type]
        if len(parts) != 13:
            raise Ros2Error(f"{kind.name.lower()} token {key!r} must have 13 chunks, got {len(parts)}")
        return cls(**common, topic=demangle(parts[9]), dds_type=demangle(parts[10]),  # type: ignore[arg-type]
                   type_hash=demangle(parts[11]), qos=Qos.from_keyexpr(parts[12]))


def graph_selector(domain_id: int) -> str:
    """What rmw_zenoh queries (and subscribes to) to learn the graph: ``@ros2_lv/<domain>/**``."""
    return f"{ADMIN_SPACE}/{check_domain_id(domain_id)}/**"
