"""config/sros2/policy.xml grants the policy_node and distillation_server enclaves exactly what the
live nodes publish, subscribe and serve (so Enforce neither breaks a node nor opens more than it
uses), and the operator may call only what exists. Enforcement itself needs sros2's keystore
tools, which are not available as wheels here."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest

from conftest import REPO

pytestmark = pytest.mark.ros

POLICY = REPO / "config" / "sros2" / "policy.xml"
ACTION_SERVICES = ("send_goal", "cancel_goal", "get_result")
ACTION_TOPICS = ("feedback", "status")


def _expand(name: str, node: str) -> str:
    if name.startswith("~/"):
        return f"/{node}/{name[2:]}"
    return name if name.startswith("/") else f"/{name}"


def grants(enclave: str) -> dict[str, set[str]]:
    """kind (publish, subscribe, reply, request) -> fully qualified names, actions expanded."""
    profile = ElementTree.parse(POLICY).getroot().find(f"./enclaves/enclave[@path='{enclave}']/profiles/profile")
    node = profile.get("node")
    out: dict[str, set[str]] = {kind: set() for kind in ("publish", "subscribe", "reply", "request")}
    for group in profile:
        for kind, value in group.attrib.items():
            assert value == "ALLOW", f"{enclave}: {group.tag} {kind}={value}"
            names = {_expand(e.text.strip(), node) for e in group}
            if group.tag == "actions":  # an action is services and topics underneath
                server = kind == "execute"
                out["reply" if server else "request"] |= {f"{n}/_action/{s}" for n in names for s in ACTION_SERVICES}
                out["publish" if server else "subscribe"] |= {f"{n}/_action/{t}" for n in names for t in ACTION_TOPICS}
            else:
                out[kind] |= names
    return out


def graph(ros, node_name: str, expected: dict[str, set[str]]) -> dict[str, set[str]]:
    """The node's publishers, subscriptions, services and clients as discovered, once they match
    `expected` or after 20 s (discovery on a loaded machine takes a while)."""
    from rclpy.node import Node

    probe = ros.node(Node, "graph_probe")

    def offered():
        return {"publish": {n for n, _ in probe.get_publisher_names_and_types_by_node(node_name, "/")},
                "subscribe": {n for n, _ in probe.get_subscriber_names_and_types_by_node(node_name, "/")},
                "reply": {n for n, _ in probe.get_service_names_and_types_by_node(node_name, "/")},
                "request": {n for n, _ in probe.get_client_names_and_types_by_node(node_name, "/")}}

    ros.spin_until(lambda: all(offered()[kind] == names for kind, names in expected.items()), 20.0)
    return offered()


def test_policy_node_enclave_grants_exactly_what_the_node_uses(ros):
    from rclpy.parameter import Parameter

    from snapflow_ros.ros.policy_node import PolicyNode

    ros.node(PolicyNode, parameter_overrides=[Parameter("joint_names", value=["a", "b"]),
                                              Parameter("cameras", value=["front", "wrist"]),
                                              Parameter("camera_formats", value=["raw", "compressed"])])
    granted = grants("/snapflow/policy_node")
    live = graph(ros, "policy_node", {kind: granted[kind] for kind in ("publish", "subscribe", "reply")})
    for kind in ("publish", "subscribe", "reply"):
        assert live[kind] == granted[kind], (kind, live[kind] ^ granted[kind])
    assert live["request"] == set()


def test_distillation_server_enclave_grants_exactly_what_the_server_uses(ros):
    from snapflow_ros.ros.distillation_server import DistillationServer

    ros.node(DistillationServer)
    granted = grants("/snapflow/distillation_server")
    live = graph(ros, "distillation_server", {kind: granted[kind] for kind in ("publish", "subscribe", "reply")})
    for kind in ("publish", "subscribe", "reply"):
        assert live[kind] == granted[kind], (kind, live[kind] ^ granted[kind])
    # Its swap client exists only while a finished job's swap is requested; the policy allows that one.
    assert granted["request"] == {"/policy_node/set_parameters"}


def test_the_operator_may_call_only_what_the_nodes_serve():
    served = grants("/snapflow/policy_node")["reply"] | grants("/snapflow/distillation_server")["reply"]
    operator = grants("/snapflow/operator")
    assert operator["request"] <= served, operator["request"] - served
    assert "/policy_node/set_parameters" in operator["request"]  # checkpoint swaps are the operator's
    controller = grants("/snapflow/controller")
    assert controller["request"] == set() and controller["subscribe"] == {"/action_chunk", "/joint_trajectory"}
