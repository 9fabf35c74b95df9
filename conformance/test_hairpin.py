"""Hairpin: a pod reaching itself through its own Service.

The connection leaves the pod for the Service address and is DNATed back to the same pod.
Unless the proxier masquerades it, the pod receives a packet from its own address and
answers itself directly, bypassing the node's conntrack entry, so the connection never
completes (kubernetes#13375). kube-proxy masquerades it in the endpoint chain
(``-A KUBE-SEP-... -s <endpoint IP> -j KUBE-MARK-MASQ``), whatever path led there: the
ClusterIP, or a nodePort (for externalTrafficPolicy Local, pods take the short-circuit to
the cluster chain and only that rule masquerades them).

With a bridge pod network (``--pod-network=bridge``) the same checks also need the node's
bridge to send the frame back out of the port it came in on (hairpin_mode, kubelet's
``--hairpin-mode=hairpin-veth``); tests/selftest/test_bridge_mode.py runs them that way.
"""

import pytest

from harness.api import PortSpec, expect, probe, reached_only, source_seen

pytestmark = pytest.mark.hairpin

REF = "https://github.com/kubernetes/kubernetes/issues/13375"
REF_CODE = "https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go"


def node_addresses(cluster):
    """Every address a node may masquerade to: its lan addresses and its pod gateway."""
    return {a for n in cluster.nodes for a in (*n.addresses, n.pod_gateway) if a}


def check_hairpin(cluster, pod, dst, port, proto, what):
    nodes = node_addresses(cluster)
    obs = probe(pod, dst, port, proto, count=4)
    v = reached_only(obs, {pod.name})
    expect(v, f"hairpin {pod.name} ({pod.ip}) → {what} {dst}:{port}/{proto}")
    v = source_seen(obs, lambda s: s in nodes, description=f"a node address (one of {sorted(nodes)})")
    expect(v, f"hairpin {pod.name} ({pod.ip}) → {what} {dst}:{port}/{proto}: the pod must "
                      "see a node address, not its own")


@pytest.mark.behavior(
    "service/hairpin/clusterip-sees-node-address",
    must="A pod that reaches itself through its Service's ClusterIP MUST get an answer, and "
         "MUST see the connection come from a node address.",
    ref=REF,
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_pod_reaching_itself_via_clusterip_sees_node_address(cluster, proto):
    pod = cluster.add_pod(cluster.nodes[0])
    svc = cluster.create_service([pod], ports=[PortSpec(80, 8080, proto)])

    check_hairpin(cluster, pod, svc.cluster_ip, 80, proto.lower(), "ClusterIP")


@pytest.mark.behavior(
    "service/hairpin/nodeport-sees-node-address",
    must="A pod that reaches itself through its Service's nodePort on its own node MUST get an "
         "answer, and MUST see the connection come from a node address, whatever the "
         "externalTrafficPolicy.",
    ref=REF_CODE,
)
@pytest.mark.nodeport
@pytest.mark.parametrize("policy", ["Cluster", "Local"])
def test_pod_reaching_itself_via_nodeport_sees_node_address(cluster, policy):
    node = cluster.nodes[0]
    pod = cluster.add_pod(node)
    svc = cluster.create_service([pod], ports=[PortSpec(80, 8080, "TCP")], type="NodePort",
                                 external_traffic_policy=policy)

    check_hairpin(cluster, pod, node.ip, svc.node_port(), "tcp", f"nodePort (eTP {policy}) of {node.name}")
