"""Everything a conformance check imports, from one place.

A check gets its cluster from a fixture (``cluster``, or a module's own through
``scoped_cluster``), creates pods and Services on it, sends probes and states what must
hold with an ``expect_*`` helper; a miss fails the check with the explanation, and the
harness adds the evidence (proxier logs, rules). Example::

    from harness.api import PortSpec, expect_reached, probe

    def test_x(cluster):
        pods = cluster.add_pods(2)
        svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="NodePort")
        for node in cluster.nodes:
            obs = probe(cluster.client, node.ip, svc.node_port(), "tcp", count=6)
            expect_reached(obs, pods, f"via {node.name} ({node.ip})")

What lives where (for reading further): handles in ``harness.cluster`` (``ClusterScope``,
``ServiceHandle``) and ``harness.topology.netns`` (``Node``, ``Pod``, ``Client``); specs in
``harness.model``; probes in ``harness.traffic.probe``; verdicts in ``harness.verdicts``;
expectations in ``harness.expect``; rules and conntrack in ``harness.netfilter``; packet
traces in ``harness.trace``; report timelines in ``harness.report.timelines``.
"""

from harness import eras
from harness.cluster import ClusterScope, HostNetworkPod, ServiceHandle
from harness.controlplane.statedir import SyncTimeout
from harness.evidence import attach
from harness.expect import (
    VerdictFailure,
    expect,
    expect_affinity,
    expect_dropped,
    expect_reached,
    expect_refused,
    expect_source,
    expect_true,
    expect_uniform,
    names,
)
from harness.model import EndpointSpec, NodeMeta, PortSpec, ServiceSpecIn, SliceSpec
from harness.netfilter import (
    MarkObserver,
    conntrack_entries,
    dump_rules,
    entries_text,
    native_nft_tables,
    wait_no_stale_udp,
)
from harness.plugin import scoped_cluster
from harness.report.timelines import AffinityTimeline, churn_timeline
from harness.timing import Timing
from harness.topology.netns import Client, Host, Node, Pod
from harness.topology.spec import IPV6_PLAN, ClientSpec, NodeSpec, TopologySpec
from harness.trace import attach_trace, flow_match
from harness.traffic.echo import read_greeting, read_line
from harness.traffic.probe import (
    Observation,
    Outcome,
    ip_header,
    ip_layer,
    probe,
    send_crafted,
    sniff_in,
)
from harness.verdicts import (
    Verdict,
    affinity_clients_needed,
    affinity_connections_needed,
    affinity_verdict,
    dropped,
    probe_table,
    reach_samples,
    reached_all,
    reached_only,
    refused,
    required_samples,
    source_seen,
    uniformity_verdict,
)

__all__ = [
    "IPV6_PLAN", "AffinityTimeline", "Client", "ClientSpec", "ClusterScope", "EndpointSpec",
    "Host", "HostNetworkPod", "MarkObserver", "Node", "NodeMeta", "NodeSpec", "Observation", "Outcome", "Pod", "PortSpec",
    "ServiceHandle", "ServiceSpecIn", "SliceSpec", "SyncTimeout", "Timing", "TopologySpec", "Verdict",
    "VerdictFailure", "affinity_clients_needed", "affinity_connections_needed",
    "affinity_verdict", "attach", "attach_trace", "churn_timeline", "conntrack_entries",
    "dropped", "dump_rules", "eras", "entries_text", "expect", "expect_affinity", "expect_dropped",
    "expect_reached", "expect_refused", "expect_source", "expect_true", "expect_uniform",
    "flow_match", "ip_header", "ip_layer", "names", "native_nft_tables", "probe",
    "probe_table", "reach_samples", "reached_all", "read_greeting", "read_line", "reached_only",
    "refused",
    "required_samples", "scoped_cluster", "send_crafted", "sniff_in", "source_seen",
    "uniformity_verdict", "wait_no_stale_udp",
]
