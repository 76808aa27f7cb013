"""Key expressions and liveliness tokens, character for character as rmw_zenoh documents them.

The examples are copied verbatim from ros2/rmw_zenoh ``docs/design.md`` at commit
99a6a2bd10b949052f4f12c5854825dc005e95a5 (sections "Topic and Service name mapping to Zenoh
key expressions" and "Graph Cache"). Note that the document's liveliness examples use
domain 2 although their caption says "with ROS_DOMAIN_ID=0 by default"; the tokens are
reproduced as written, with domain 2.
"""

from __future__ import annotations

import pytest

from rtvla.errors import Ros2Error
from rtvla.ros2 import (
    HUMBLE_TYPE_HASH,
    Entity,
    EntityKind,
    MessageTypes,
    Qos,
    Reliability,
    dds_type_name,
    demangle,
    fully_qualified_name,
    graph_selector,
    mangle,
    ros_type_name,
    topic_key,
)
from rtvla.ros2.liveliness import Durability, History

STRING_HASH = "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
ADD_TWO_INTS_HASH = "RIHS01_e118de6bf5eeb66a2491b5bda11202e7b68f198d6f67922cf30364858239c81a"

# --- verbatim from docs/design.md ---------------------------------------------------------
DOC_CHATTER_KEY = "0/chatter/std_msgs::msg::dds_::String_/RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
DOC_CHATTER_NS_KEY = "0/robot1/chatter/std_msgs::msg::dds_::String_/RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
DOC_ADD_TWO_INTS_KEY = "2/add_two_ints/example_interfaces::srv::dds_::AddTwoInts_/RIHS01_e118de6bf5eeb66a2491b5bda11202e7b68f198d6f67922cf30364858239c81a"
DOC_LISTENER_NODE = "@ros2_lv/2/aac3178e146ba6f1fc6e6a4085e77f21/0/0/NN/%/%/listener"
DOC_LISTENER_SUB = "@ros2_lv/2/aac3178e146ba6f1fc6e6a4085e77f21/0/10/MS/%/%/listener/%chatter/std_msgs::msg::dds_::String_/RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18/::,10:,:,:,,"
DOC_TALKER_PUB = "@ros2_lv/2/8b20917502ee955ac4476e0266340d5c/0/10/MP/%/%/talker/%chatter/std_msgs::msg::dds_::String_/RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18/::,7:,:,:,,"
DOC_SERVER = "@ros2_lv/2/f9980ee0495eaafb3e38f0d19e2eae12/0/10/SS/%/%/add_two_ints_server/%add_two_ints/example_interfaces::srv::dds_::AddTwoInts_/RIHS01_e118de6bf5eeb66a2491b5bda11202e7b68f198d6f67922cf30364858239c81a/::,10:,:,:,,"
DOC_CLIENT = "@ros2_lv/2/e1dc8d1b45ae8717fce78689cc655685/0/10/SC/%/%/add_two_ints_client/%add_two_ints/example_interfaces::srv::dds_::AddTwoInts_/RIHS01_e118de6bf5eeb66a2491b5bda11202e7b68f198d6f67922cf30364858239c81a/::,10:,:,:,,"
# -------------------------------------------------------------------------------------------


def test_data_keys_match_the_design_document() -> None:
    string = dds_type_name("std_msgs/msg/String")
    assert string == "std_msgs::msg::dds_::String_"
    assert MessageTypes("jazzy").type_hash("std_msgs/msg/String") == STRING_HASH
    assert topic_key(0, fully_qualified_name("chatter"), string, STRING_HASH) == DOC_CHATTER_KEY
    assert topic_key(0, fully_qualified_name("/chatter"), string, STRING_HASH) == DOC_CHATTER_KEY
    assert topic_key(0, fully_qualified_name("chatter", "/robot1"), string, STRING_HASH) == DOC_CHATTER_NS_KEY
    srv = dds_type_name("example_interfaces/srv/AddTwoInts")
    assert topic_key(2, fully_qualified_name("add_two_ints"), srv, ADD_TWO_INTS_HASH) == DOC_ADD_TWO_INTS_KEY


def _endpoint(kind: EntityKind, zid: str, node: str, topic: str, ros_type: str, type_hash: str,
              qos: Qos = Qos()) -> Entity:
    return Entity(domain_id=2, session_id=zid, node_id=0, entity_id=10, kind=kind, node_name=node,
                  topic=topic, dds_type=dds_type_name(ros_type), type_hash=type_hash, qos=qos)


def test_liveliness_tokens_match_the_design_document() -> None:
    node = Entity(domain_id=2, session_id="aac3178e146ba6f1fc6e6a4085e77f21", node_id=0, entity_id=0,
                  kind=EntityKind.NODE, node_name="listener")
    assert node.token() == DOC_LISTENER_NODE
    sub = _endpoint(EntityKind.SUBSCRIPTION, "aac3178e146ba6f1fc6e6a4085e77f21", "listener", "/chatter",
                    "std_msgs/msg/String", STRING_HASH)
    assert sub.token() == DOC_LISTENER_SUB
    pub = _endpoint(EntityKind.PUBLISHER, "8b20917502ee955ac4476e0266340d5c", "talker", "/chatter",
                    "std_msgs/msg/String", STRING_HASH, Qos(depth=7))
    assert pub.token() == DOC_TALKER_PUB
    server = _endpoint(EntityKind.SERVICE, "f9980ee0495eaafb3e38f0d19e2eae12", "add_two_ints_server",
                       "/add_two_ints", "example_interfaces/srv/AddTwoInts", ADD_TWO_INTS_HASH)
    assert server.token() == DOC_SERVER
    client = _endpoint(EntityKind.CLIENT, "e1dc8d1b45ae8717fce78689cc655685", "add_two_ints_client",
                       "/add_two_ints", "example_interfaces/srv/AddTwoInts", ADD_TWO_INTS_HASH)
    assert client.token() == DOC_CLIENT


@pytest.mark.parametrize("token", [DOC_LISTENER_NODE, DOC_LISTENER_SUB, DOC_TALKER_PUB, DOC_SERVER, DOC_CLIENT])
def test_document_tokens_parse_and_rebuild_identically(token: str) -> None:
    assert Entity.parse(token).token() == token


def test_parsed_token_fields() -> None:
    e = Entity.parse(DOC_TALKER_PUB)
    assert (e.domain_id, e.session_id, e.node_id, e.entity_id) == (2, "8b20917502ee955ac4476e0266340d5c", 0, 10)
    assert e.kind is EntityKind.PUBLISHER and e.node_name == "talker" and e.namespace == "/"
    assert e.topic == "/chatter" and e.dds_type == "std_msgs::msg::dds_::String_"
    assert e.qos == Qos(depth=7)


def test_namespaced_entities_are_mangled() -> None:
    e = Entity(domain_id=0, session_id="ab", node_id=3, entity_id=7, kind=EntityKind.PUBLISHER,
               node_name="cam", namespace="/robot1", topic="/robot1/camera/image_raw",
               dds_type="sensor_msgs::msg::dds_::Image_", type_hash=HUMBLE_TYPE_HASH, qos=Qos.sensor_data())
    assert e.token() == ("@ros2_lv/0/ab/3/7/MP/%/%robot1/cam/%robot1%camera%image_raw/"
                         "sensor_msgs::msg::dds_::Image_/TypeHashNotSupported/2::,5:,:,:,,")
    assert Entity.parse(e.token()) == e


def test_qos_chunk_encodes_only_what_differs_from_rmw_zenoh_defaults() -> None:
    assert Qos().to_keyexpr() == "::,10:,:,:,,"
    assert Qos.sensor_data().to_keyexpr() == "2::,5:,:,:,,"
    assert Qos(depth=0).to_keyexpr() == "::,:,:,:,,"  # depth 0 -> rmw_zenoh's 42, the default
    assert Qos(history=History.KEEP_ALL, durability=Durability.TRANSIENT_LOCAL, depth=1).to_keyexpr() == ":1:2,1:,:,:,,"
    assert Qos(deadline=(1, 500)).to_keyexpr() == "::,10:1,500:,:,,"
    for q in (Qos(), Qos.sensor_data(), Qos(reliability=Reliability.BEST_EFFORT, depth=3, lifespan=(2, 0))):
        assert Qos.from_keyexpr(q.to_keyexpr()) == q.resolved()


@pytest.mark.parametrize("bad", ["", "::,10:,:,:", "::10:,:,:,,", "x::,10:,:,:,,", "9::,10:,:,:,,", "::,1a:,:,:,,"])
def test_malformed_qos_chunks_are_refused(bad: str) -> None:
    with pytest.raises(Ros2Error):
        Qos.from_keyexpr(bad)


@pytest.mark.parametrize("bad", [
    "@ros2_lv/0/z/0/0/NN/%/%",  # too short
    "@ros2_lv/0/z/0/0/NN//%/node",  # empty chunk
    "@other/0/z/0/0/NN/%/%/node",
    "@ros2_lv/0/z/0/0/XX/%/%/node",
    "@ros2_lv/x/z/0/0/NN/%/%/node",
    "@ros2_lv/0/z/0/1/MP/%/%/node/%chatter/std_msgs::msg::dds_::String_/" + STRING_HASH,  # no qos
    "@ros2_lv/0/z/0/1/MP/%/%/node/%chatter/std_msgs::msg::dds_::String_/badhash/::,10:,:,:,,",
])
def test_malformed_tokens_are_refused(bad: str) -> None:
    with pytest.raises(Ros2Error):
        Entity.parse(bad)


def test_names_and_types_are_validated() -> None:
    assert mangle("/robot1/chatter") == "%robot1%chatter" and demangle("%robot1%chatter") == "/robot1/chatter"
    assert ros_type_name("geometry_msgs::msg::dds_::Twist_") == "geometry_msgs/msg/Twist"
    assert graph_selector(0) == "@ros2_lv/0/**"
    for bad in ("", "a//b", "1abc", "cmd-vel", "~/private", "trailing/"):
        with pytest.raises(Ros2Error, match="topic name"):
            fully_qualified_name(bad)
    for bad in ("String", "std_msgs/String", "std_msgs/msg/string"):
        with pytest.raises(Ros2Error, match="ROS 2 type"):
            dds_type_name(bad)
    with pytest.raises(Ros2Error, match="domain id"):
        topic_key(233, "/chatter", "std_msgs::msg::dds_::String_", STRING_HASH)
    with pytest.raises(Ros2Error, match="fully qualified"):
        topic_key(0, "chatter", "std_msgs::msg::dds_::String_", STRING_HASH)
