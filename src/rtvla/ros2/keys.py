"""ROS 2 names as rmw_zenoh maps them to Zenoh key expressions.

rmw_zenoh (``docs/design.md``, "Topic and Service name mapping to Zenoh key expressions")
sends a topic's samples on ``<domain_id>/<fully_qualified_name>/<type_name>/<type_hash>``,
where the fully qualified name loses its leading (and any trailing) slash, the type name is
the DDS one (``std_msgs/msg/String`` -> ``std_msgs::msg::dds_::String_``) and the type hash
is the RIHS01 hash (``RIHS01_<sha256 hex>``; Humble has none and writes
``TypeHashNotSupported``). Liveliness tokens carry names *mangled*: every ``/`` becomes
``%``, so a name fits in one key chunk.

Usage::

    topic_key(0, fully_qualified_name("chatter"), dds_type_name("std_msgs/msg/String"), h)
    # '0/chatter/std_msgs::msg::dds_::String_/RIHS01_df66...'
"""

from __future__ import annotations

import re

from rtvla.errors import Ros2Error

__all__ = [
    "HUMBLE_TYPE_HASH",
    "check_domain_id",
    "check_type_hash",
    "dds_type_name",
    "demangle",
    "fully_qualified_name",
    "mangle",
    "normalize_namespace",
    "ros_type_name",
    "strip_slashes",
    "topic_key",
]

HUMBLE_TYPE_HASH = "TypeHashNotSupported"

# ROS 2 topic and service names (design.ros2.org "Topic and Service name mapping"): tokens of
# alphanumerics and underscores, separated by single slashes, not starting with a digit.
_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ROS_TYPE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)/(msg|srv|action)/([A-Z][A-Za-z0-9_]*)$")
_DDS_TYPE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)::(msg|srv|action)::dds_::([A-Z][A-Za-z0-9_]*)_$")
_TYPE_HASH = re.compile(r"^RIHS01_[0-9a-f]{64}$")


def mangle(name: str) -> str:
    """``/`` -> ``%`` (rmw_zenoh's ``mangle_name``), so a ROS name fits in one key chunk."""
    return name.replace("/", "%")


def demangle(name: str) -> str:
    """``%`` -> ``/`` (rmw_zenoh's ``demangle_name``)."""
    return name.replace("%", "/")


def strip_slashes(name: str) -> str:
    """One leading and one trailing slash removed, as rmw_zenoh does for the data key."""
    if name.startswith("/"):
        name = name[1:]
    if name.endswith("/"):
        name = name[:-1]
    return name


def _check_tokens(what: str, name: str, path: str) -> None:
    for token in path.split("/"):
        if not _TOKEN.match(token):
            raise Ros2Error(f"{what} {name!r} is not a valid ROS 2 name: token {token!r} must be "
                            f"letters, digits and underscores, not starting with a digit")


def normalize_namespace(namespace: str) -> str:
    """``""`` or ``"/"`` -> ``"/"``; ``"robot1"`` -> ``"/robot1"``; validated."""
    if not isinstance(namespace, str):
        raise Ros2Error(f"namespace must be a string, got {type(namespace).__name__}")
    ns = namespace.strip()
    if ns in ("", "/"):
        return "/"
    if not ns.startswith("/"):
        ns = "/" + ns
    if ns.endswith("/"):
        raise Ros2Error(f"namespace {namespace!r} must not end with '/'")
    _check_tokens("namespace", namespace, ns[1:])
    return ns


def fully_qualified_name(name: str, namespace: str = "/") -> str:
    """The fully qualified ROS 2 name: absolute names stay, relative ones get ``namespace``.

    ``~`` (private names) and substitutions are not supported: rtvla names its topics plainly.
    """
    if not isinstance(name, str) or not name:
        raise Ros2Error(f"topic name must be a non-empty string, got {name!r}")
    if "~" in name or "{" in name:
        raise Ros2Error(f"topic name {name!r}: private (~) names and substitutions are not supported")
    if name.endswith("/"):
        raise Ros2Error(f"topic name {name!r} must not end with '/'")
    if name.startswith("/"):
        fq = name
    else:
        ns = normalize_namespace(namespace)
        fq = ("" if ns == "/" else ns) + "/" + name
    _check_tokens("topic name", name, fq[1:])
    return fq


def dds_type_name(ros_type: str) -> str:
    """``pkg/msg/Type`` -> ``pkg::msg::dds_::Type_`` (the name CDR typesupport declares)."""
    m = _ROS_TYPE.match(ros_type) if isinstance(ros_type, str) else None
    if m is None:
        raise Ros2Error(f"ROS 2 type must look like 'std_msgs/msg/String', got {ros_type!r}")
    pkg, kind, name = m.groups()
    return f"{pkg}::{kind}::dds_::{name}_"


def ros_type_name(dds_type: str) -> str:
    """Inverse of :func:`dds_type_name`."""
    m = _DDS_TYPE.match(dds_type) if isinstance(dds_type, str) else None
    if m is None:
        raise Ros2Error(f"DDS type name must look like 'std_msgs::msg::dds_::String_', got {dds_type!r}")
    pkg, kind, name = m.groups()
    return f"{pkg}/{kind}/{name}"


def check_type_hash(type_hash: str) -> str:
    """``type_hash`` if it is ``RIHS01_<64 hex>`` or Humble's ``TypeHashNotSupported``."""
    if type_hash != HUMBLE_TYPE_HASH and not (isinstance(type_hash, str) and _TYPE_HASH.match(type_hash)):
        raise Ros2Error(f"type hash must be 'RIHS01_<64 hex digits>' or {HUMBLE_TYPE_HASH!r}, "
                        f"got {type_hash!r}")
    return type_hash


def topic_key(domain_id: int, fq_name: str, dds_type: str, type_hash: str) -> str:
    """The Zenoh key rmw_zenoh publishes ``fq_name`` on: ``<domain>/<name>/<type>/<hash>``."""
    check_domain_id(domain_id)
    if not fq_name.startswith("/"):
        raise Ros2Error(f"topic_key needs a fully qualified name (leading '/'), got {fq_name!r}")
    ros_type_name(dds_type)  # validates
    check_type_hash(type_hash)
    return f"{domain_id}/{strip_slashes(fq_name)}/{dds_type}/{type_hash}"


def check_domain_id(domain_id: int) -> int:
    """``domain_id`` if it is an int in 0..232 (ROS 2's valid range), else Ros2Error."""
    if isinstance(domain_id, bool) or not isinstance(domain_id, int) or not 0 <= domain_id <= 232:
        raise Ros2Error(f"ROS domain id must be an integer in 0..232, got {domain_id!r}")
    return domain_id

