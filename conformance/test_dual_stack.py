"""Dual-stack Services: one Service with a ClusterIP of each family, on dual-stack nodes.

kube-proxy on a dual-stack node runs one proxier per family in one process: each uses the
Service's clusterIP of its family (``spec.clusterIPs``) and only the EndpointSlices of its
``addressType``. The checks run on their own dual-stack cluster (one per module and
pytest-xdist worker): every node, client and pod has an IPv4 and an IPv6 address. They
need a proxier that declares ``ipv6`` and ``dual-stack``; the proxier command gets comma
lists (IPv4 first) for ``{node_ip}``, ``{cluster_cidr}`` and ``{service_cidr}``.
"""

import pytest

from harness.api import (
    ClientSpec,
    NodeSpec,
    PortSpec,
    TopologySpec,
    expect_true,
    probe,
    reached_only,
    scoped_cluster,
)

pytestmark = [pytest.mark.ipv6, pytest.mark.requires("ipv6"), pytest.mark.requires("dual-stack")]

FAMILIES = ("IPv4", "IPv6")
DS_REF = "https://kubernetes.io/docs/concepts/services-networking/dual-stack/"


# A dual-stack cluster: two nodes, one client, the proxier on each.
cluster_ds_env, cluster_ds = scoped_cluster(
    TopologySpec(
        nodes=[NodeSpec(name="node1"), NodeSpec(name="node2")],
        clients=[ClientSpec(name="client1")],
        families=FAMILIES,  # IPv6 ranges: the ULA defaults of TopologySpec's *_v6 fields
    ),
    "cluster_ds",
)


@pytest.mark.behavior(
    "service/dual-stack/clusterip-both-families",
    must="A dual-stack Service MUST be reachable on its ClusterIP of each family, reaching "
         "only its endpoints, each family at the pod's address of that family.",
    ref=DS_REF,
)
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
# ipFamilies in either order: a Service's primary family need not be the cluster's
@pytest.mark.parametrize("order", ["IPv4-first", "IPv6-first"])
def test_dual_stack_clusterip_reaches_endpoints_on_both_families(cluster_ds, proto, order):
    node = cluster_ds.nodes[0]
    ready = cluster_ds.add_pods(2, node=node)
    bystander = cluster_ds.add_pod(node)
    families = FAMILIES if order == "IPv4-first" else FAMILIES[::-1]
    svc = cluster_ds.create_service(ready, ports=[PortSpec(80, 8080, proto)],
                                    ip_families=families)
    assert svc.ip_families == list(families), svc.cluster_ips
    src = cluster_ds.add_pod(cluster_ds.nodes[1])

    problems = []
    for fam in FAMILIES:
        cip = svc.cluster_ip_of(fam)
        obs = probe(src, cip, 80, proto.lower(), count=8)
        v = reached_only(obs, {p.name for p in ready})
        if not v.passed:
            problems.append(f"{fam} ClusterIP {cip}:80/{proto} from {src.name}:\n{v.explain()}")
            continue
        # the pod saw the client's own address of this family: the packet was DNATed within
        # the family, to the pod's address of it (pod-to-Service traffic is not masqueraded)
        wrong = [o for o in obs if o.seen_src != src.ip_of(fam) or o.pod == bystander.name]
        if wrong:
            problems.append(f"{fam} ClusterIP {cip}: expected source {src.ip_of(fam)} seen by "
                            f"{sorted(p.name for p in ready)}; got "
                            + ", ".join(f"{o.pod} saw {o.seen_src}" for o in wrong))
    expect_true(not problems, f"dual-stack Service {svc.name} clusterIPs {svc.cluster_ips}, "
                f"endpoints {[p.addresses for p in ready]}: {len(problems)} of "
                f"{len(FAMILIES)} families misbehave", "\n".join(problems))


@pytest.mark.behavior(
    "service/dual-stack/nodeport-both-families",
    must="A NodePort of a dual-stack Service MUST answer on the node's IPv4 and IPv6 "
         "addresses, reaching only the Service's endpoints.",
    ref=DS_REF,
)
def test_dual_stack_nodeport_answers_on_both_node_addresses(cluster_ds):
    pods = cluster_ds.add_pods(2, node=cluster_ds.nodes[1])
    svc = cluster_ds.create_service(pods, ports=[PortSpec(80, 8080, "TCP")], type="NodePort",
                                    ip_families=FAMILIES)
    node = cluster_ds.nodes[0]
    problems = []
    for fam in FAMILIES:
        dst = node.ip_of(fam)
        obs = probe(cluster_ds.client, dst, svc.node_port(), "tcp", count=6)
        v = reached_only(obs, {p.name for p in pods})
        if not v.passed:
            problems.append(f"{fam}: {dst}:{svc.node_port()} from {cluster_ds.client.name}:\n"
                            f"{v.explain()}")
    expect_true(not problems, f"NodePort {svc.node_port()} of dual-stack Service {svc.name} on "
                f"{node.name} ({node.addresses}): {len(problems)} of {len(FAMILIES)} families "
                "do not reach only its endpoints", "\n".join(problems))
