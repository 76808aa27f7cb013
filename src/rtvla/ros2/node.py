"""``Ros2Node``: a ROS 2 node on a Zenoh session, speaking rmw_zenoh's wire format, no ROS needed.

What a ROS 2 (Jazzy or later, or Humble) system running ``rmw_zenoh_cpp`` sees is what
rmw_zenoh itself would produce: a node liveliness token (``NN``), one token per publisher
(``MP``) and subscription (``MS``), samples on ``<domain>/<topic>/<dds type>/<type hash>``
with little-endian CDR payloads and the 33-byte attachment (sequence number, source
timestamp, GID). Subscriptions keep the newest message (latest-value semantics) and may also
call a callback for each one, on Zenoh's thread.

Usage::

    session = zenoh.open(zenoh_config(connect=["tcp/127.0.0.1:7447"]))  # the rmw_zenohd router
    node = Ros2Node(session, "rtvla", domain_id=0)
    pub = node.publisher("/chatter", "std_msgs/msg/String")
    pub.publish(node.types.make("std_msgs/msg/String", data="hello"))
    sub = node.subscription("/cmd_vel", "geometry_msgs/msg/Twist")
    s = sub.wait_newer(0, timeout=1.0)          # Ros2Sample(msg=Twist(...), ...) or None
    node.close()
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtvla.errors import Ros2Error
from rtvla.ros2.attachment import KEYED, POSITIONAL, Attachment, AttachmentLayout, gid_for
from rtvla.ros2.keys import dds_type_name, fully_qualified_name, normalize_namespace, topic_key
from rtvla.ros2.liveliness import Durability, Entity, EntityKind, History, Qos, Reliability
from rtvla.ros2.types import MessageTypes
from rtvla.timing import MONOTONIC, Clock

__all__ = ["EntityIds", "Ros2Node", "Ros2Publisher", "Ros2Sample", "Ros2Subscription"]

logger = logging.getLogger(__name__)

_WARN_EVERY = 1000  # per-sample problems: one warning, then one per this many


def _zenoh() -> Any:
    try:
        import zenoh
    except ImportError as exc:
        raise Ros2Error("rtvla.ros2 needs eclipse-zenoh: pip install 'rtvla[zenoh]'") from exc
    return zenoh


class EntityIds:
    """rmw_zenoh numbers nodes and endpoints from one counter per context (session); share
    one of these between the nodes of one session so that their ids stay distinct."""

    def __init__(self, start: int = 0) -> None:
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._counter)


@dataclass(frozen=True)
class Ros2Sample:
    """One received message. ``seq`` counts this subscription's samples (for ``wait_newer``);
    ``sequence_number``/``source_timestamp_ns``/``gid`` come from the publisher's attachment
    (the timestamp is the publisher's wall clock: only meaningful on the same host);
    ``received_ns`` is the local clock at arrival."""

    msg: Any
    seq: int
    received_ns: int
    sequence_number: int = 0
    source_timestamp_ns: int = 0
    gid: bytes = b""


def _check_qos(qos: Qos, what: str) -> Qos:
    if not isinstance(qos, Qos):
        raise Ros2Error(f"{what} qos must be a rtvla.ros2.Qos, got {type(qos).__name__}")
    if qos.resolved().durability is Durability.TRANSIENT_LOCAL:
        # rmw_zenoh serves late joiners from an AdvancedPublisher cache; rtvla does not yet.
        raise Ros2Error(f"{what}: TRANSIENT_LOCAL durability is not supported by rtvla.ros2 (use VOLATILE)")
    return qos


class _Endpoint:
    """What publishers and subscriptions share: the entity, its token and key."""

    kind: EntityKind

    def __init__(self, node: Ros2Node, topic: str, ros_type: str, qos: Qos) -> None:
        self.node = node
        self.ros_type = node.types.check(ros_type)
        self.qos = _check_qos(qos, f"{self.kind.name.lower()} on {topic!r}")
        self.topic = fully_qualified_name(topic, node.namespace)
        dds = dds_type_name(ros_type)
        type_hash = node.types.type_hash(ros_type)
        self.entity = Entity(
            domain_id=node.domain_id, session_id=node.session_id, node_id=node.node_id,
            entity_id=node.ids.next(), kind=self.kind, node_name=node.name, namespace=node.namespace,
            enclave=node.enclave, topic=self.topic, dds_type=dds, type_hash=type_hash, qos=qos)
        self.key = topic_key(node.domain_id, self.topic, dds, type_hash)
        self.token_key = self.entity.token()
        self.gid = gid_for(self.token_key)
        self._token: Any = None
        self._closed = False

    def _declare_token(self) -> None:
        self._token = self.node.session.liveliness().declare_token(self.token_key)

    @property
    def closed(self) -> bool:
        return self._closed

    def _undeclare(self, *entities: Any) -> None:
        for e in (self._token, *entities):
            if e is None:
                continue
            try:
                e.undeclare()
            except Exception as exc:  # the session may already be closed by its owner
                logger.debug("ros2 %s %s: undeclare failed: %s", self.kind.name.lower(), self.topic, exc)


class Ros2Publisher(_Endpoint):
    """Publishes one topic; each sample carries rmw_zenoh's attachment."""

    kind = EntityKind.PUBLISHER

    def __init__(self, node: Ros2Node, topic: str, ros_type: str, qos: Qos = Qos()) -> None:
        super().__init__(node, topic, ros_type, qos)
        zenoh = _zenoh()
        q = qos.resolved()
        reliable = q.reliability is Reliability.RELIABLE
        # rmw_zenoh: DROP, except BLOCK for reliable keep-all (the publisher then paces itself).
        congestion = (zenoh.CongestionControl.BLOCK if reliable and q.history is History.KEEP_ALL
                      else zenoh.CongestionControl.DROP)
        self._lock = threading.Lock()
        self._seq = 0
        self._matched = threading.Event()
        self._pub = node.session.declare_publisher(
            self.key, congestion_control=congestion,
            reliability=zenoh.Reliability.RELIABLE if reliable else zenoh.Reliability.BEST_EFFORT)
        self._matching = self._pub.declare_matching_listener(self._on_matching)
        if self._pub.matching_status.matching:
            self._matched.set()
        self._declare_token()

    def _on_matching(self, status: Any) -> None:
        if status.matching:
            self._matched.set()
        else:
            self._matched.clear()

    def wait_matched(self, timeout: float | None = None) -> bool:
        """Block until a subscriber on the exact key is reachable (False on timeout)."""
        return self._matched.wait(timeout)

    @property
    def sequence_number(self) -> int:
        """The sequence number of the last sample sent (rmw_zenoh starts at 1)."""
        return self._seq

    def publish(self, msg: Any) -> int:
        """Serialize ``msg`` (a rosbags message of this topic's type) and send it; returns its sequence number."""
        return self.publish_cdr(self.node.types.serialize(msg, self.ros_type))

    def publish_cdr(self, payload: bytes) -> int:
        """Send already serialized CDR bytes."""
        with self._lock:
            if self._closed:
                raise Ros2Error(f"publisher on {self.topic} is closed")
            self._seq += 1
            att = Attachment(self._seq, self.node.wall_clock_ns(), self.gid).encode(self.node.attachment)
            self._pub.put(payload, attachment=att)
            return self._seq

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._undeclare(self._matching, self._pub)


class Ros2Subscription(_Endpoint):
    """Subscribes to one topic, keeps the newest message, optionally calls ``callback``.

    A sample without rmw_zenoh's attachment (``require_attachment``) or whose payload does
    not deserialize as the topic's type is counted and dropped, never delivered.
    """

    kind = EntityKind.SUBSCRIPTION

    def __init__(self, node: Ros2Node, topic: str, ros_type: str,
                 callback: Callable[[Ros2Sample], None] | None = None, *, qos: Qos = Qos(),
                 require_attachment: bool = True) -> None:
        super().__init__(node, topic, ros_type, qos)
        if callback is not None and not callable(callback):
            raise Ros2Error(f"subscription callback for {self.topic} must be callable")
        self.callback = callback
        self.require_attachment = require_attachment
        self._cond = threading.Condition(threading.Lock())
        self._latest: Ros2Sample | None = None
        self._count = 0
        self._last_seq: dict[bytes, int] = {}
        self.received = 0
        self.missed = 0
        self.rejected = 0  # no or malformed attachment
        self.decode_errors = 0
        self.callback_errors = 0
        self._sub = node.session.declare_subscriber(self.key, self._on_sample)
        self._declare_token()

    def _warn(self, counter: int, what: str, detail: object) -> None:
        if counter % _WARN_EVERY == 1:
            logger.warning("ros2 subscription %s: %s (%s; %d so far)", self.topic, what, detail, counter)

    def _on_sample(self, zsample: Any) -> None:
        now = self.node.clock.now_ns()
        att: Attachment | None = None
        if zsample.attachment is not None:
            try:
                att = Attachment.decode(zsample.attachment)
            except Ros2Error as exc:
                self.rejected += 1
                self._warn(self.rejected, "dropped a sample with a malformed attachment", exc)
                return
        elif self.require_attachment:
            self.rejected += 1
            self._warn(self.rejected, "dropped a sample without the rmw_zenoh attachment", self.key)
            return
        try:
            msg = self.node.types.deserialize(zsample.payload.to_bytes(), self.ros_type)
        except Ros2Error as exc:
            self.decode_errors += 1
            self._warn(self.decode_errors, "dropped an undecodable payload", exc)
            return
        with self._cond:
            if self._closed:
                return
            if att is not None:
                last = self._last_seq.get(att.gid, 0)
                if last and att.sequence_number > last + 1:
                    self.missed += att.sequence_number - last - 1
                self._last_seq[att.gid] = att.sequence_number  # a restarted publisher starts at 1
            self.received += 1
            self._count += 1
            sample = Ros2Sample(msg, self._count, now, att.sequence_number if att else 0,
                                att.source_timestamp_ns if att else 0, att.gid if att else b"")
            self._latest = sample
            self._cond.notify_all()
        if self.callback is not None:
            try:
                self.callback(sample)
            except Exception as exc:  # a user callback must not kill Zenoh's thread
                self.callback_errors += 1
                self._warn(self.callback_errors, "callback raised", repr(exc))

    def latest(self) -> Ros2Sample | None:
        """The newest message received, or None."""
        return self._latest

    @property
    def seq(self) -> int:
        return self._count

    def wait_newer(self, seq: int, timeout: float | None = None) -> Ros2Sample | None:
        """The newest sample once its ``seq`` exceeds ``seq``; None on timeout or close."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._count > seq or self._closed, timeout)
            if not ok or self._latest is None or self._latest.seq <= seq:
                return None
            return self._latest

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._undeclare(self._sub)


class Ros2Node:
    """A ROS 2 node: its ``NN`` token, and the publishers and subscriptions made from it.

    ``session`` is an open Zenoh session that the node borrows (it does not close it).
    ``wall_clock_ns`` stamps the attachment's source timestamp, which rmw_zenoh defines as
    ns since the UNIX epoch; ``clock`` stamps arrivals (monotonic). ``attachment``: the layout
    to send, ``"positional"`` (rmw_zenoh_cpp 0.2.4 and later) or ``"keyed"`` (older releases);
    both are accepted on receipt.
    """

    def __init__(self, session: Any, name: str, *, namespace: str = "/", domain_id: int = 0,
                 distro: str = "jazzy", enclave: str = "/", clock: Clock = MONOTONIC,
                 wall_clock_ns: Callable[[], int] = time.time_ns, ids: EntityIds | None = None,
                 types: MessageTypes | None = None, attachment: AttachmentLayout = POSITIONAL) -> None:
        if attachment not in (POSITIONAL, KEYED):
            raise Ros2Error(f"attachment layout must be {POSITIONAL!r} or {KEYED!r}, got {attachment!r}")
        self.attachment = attachment
        self.session = session
        self.name = name
        self.namespace = normalize_namespace(namespace)
        self.domain_id = domain_id
        self.enclave = enclave or "/"
        self.clock = clock
        self.wall_clock_ns = wall_clock_ns
        self.types = types if types is not None else MessageTypes(distro)
        self.distro = self.types.distro
        self.ids = ids if ids is not None else EntityIds()
        self.session_id = str(session.info.zid())
        self.node_id = self.ids.next()
        self.entity = Entity(domain_id=domain_id, session_id=self.session_id, node_id=self.node_id,
                             entity_id=self.node_id, kind=EntityKind.NODE, node_name=name,
                             namespace=self.namespace, enclave=self.enclave)
        self.token_key = self.entity.token()
        self._endpoints: list[Ros2Publisher | Ros2Subscription] = []
        self._lock = threading.Lock()
        self._closed = False
        self._token = session.liveliness().declare_token(self.token_key)

    def _add(self, endpoint: Any) -> Any:
        with self._lock:
            if self._closed:
                endpoint.close()
                raise Ros2Error(f"node {self.name!r} is closed")
            self._endpoints.append(endpoint)
        return endpoint

    def publisher(self, topic: str, ros_type: str, qos: Qos = Qos()) -> Ros2Publisher:
        """A publisher of ``ros_type`` messages on ``topic`` (relative names get the namespace)."""
        return self._add(Ros2Publisher(self, topic, ros_type, qos))

    def subscription(self, topic: str, ros_type: str, callback: Callable[[Ros2Sample], None] | None = None,
                     *, qos: Qos = Qos(), require_attachment: bool = True) -> Ros2Subscription:
        """A latest-value subscription to ``topic``; ``callback`` (if any) runs on Zenoh's thread."""
        return self._add(Ros2Subscription(self, topic, ros_type, callback, qos=qos,
                                          require_attachment=require_attachment))

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Undeclare every endpoint and the node token (the session stays open); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            endpoints, self._endpoints = self._endpoints, []
        for e in endpoints:
            e.close()
        try:
            self._token.undeclare()
        except Exception as exc:
            logger.debug("ros2 node %s: undeclare failed: %s", self.name, exc)

    def __enter__(self) -> Ros2Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ros2Node({self.name!r}, domain={self.domain_id}, {self.distro}, {len(self._endpoints)} endpoints)"
