"""ROS 2 without a ROS installation: rmw_zenoh's wire format over a Zenoh session.

Key expressions (:mod:`~rtvla.ros2.keys`), liveliness tokens and QoS (:mod:`~rtvla.ros2.liveliness`),
the per-sample attachment (:mod:`~rtvla.ros2.attachment`), CDR and type hashes through rosbags
(:mod:`~rtvla.ros2.types`), nodes with publishers and latest-value subscriptions
(:mod:`~rtvla.ros2.node`) and the bridge a run can enable (:mod:`~rtvla.ros2.bridge`).
Follows ros2/rmw_zenoh ``docs/design.md`` (Jazzy and later; Humble's keys without type hash).
"""

from __future__ import annotations

from rtvla.ros2.attachment import ATTACHMENT_SIZE, GID_SIZE, Attachment, AttachmentLayout, gid_for
from rtvla.ros2.bridge import (
    BaseVelocityCommand,
    BridgeTopics,
    Ros2Bridge,
    Transform,
    yaw_quaternion,
)
from rtvla.ros2.keys import (
    HUMBLE_TYPE_HASH,
    dds_type_name,
    demangle,
    fully_qualified_name,
    mangle,
    ros_type_name,
    topic_key,
)
from rtvla.ros2.liveliness import (
    ADMIN_SPACE,
    Durability,
    Entity,
    EntityKind,
    History,
    Liveliness,
    Qos,
    Reliability,
    graph_selector,
)
from rtvla.ros2.node import EntityIds, Ros2Node, Ros2Publisher, Ros2Sample, Ros2Subscription
from rtvla.ros2.types import DISTROS, MessageTypes

__all__ = [
    "ADMIN_SPACE",
    "ATTACHMENT_SIZE",
    "DISTROS",
    "GID_SIZE",
    "HUMBLE_TYPE_HASH",
    "Attachment",
    "AttachmentLayout",
    "BaseVelocityCommand",
    "BridgeTopics",
    "Durability",
    "Entity",
    "EntityIds",
    "EntityKind",
    "History",
    "Liveliness",
    "MessageTypes",
    "Qos",
    "Reliability",
    "Ros2Bridge",
    "Ros2Node",
    "Ros2Publisher",
    "Ros2Sample",
    "Ros2Subscription",
    "Transform",
    "dds_type_name",
    "demangle",
    "fully_qualified_name",
    "gid_for",
    "graph_selector",
    "mangle",
    "ros_type_name",
    "topic_key",
    "yaw_quaternion",
]
