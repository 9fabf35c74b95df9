"""A node switched between kube-proxy's iptables and nftables modes.

When a node's kube-proxy moves from one mode to the other, the old mode's rules are still
in the kernel: iptables chains in the nat and filter tables, or the ``kube-proxy`` nftables
table. kube-proxy removes the other mode's rules when it starts (``platformCleanup``,
cmd/kube-proxy/app/server_linux.go); left alone they would keep translating Services as
they were when the old mode stopped, deleted ones included. The check writes, on one node,
the rules the other mode would have for a Service that no longer exists (rendered by the
reference proxier), shows that they translate its old ClusterIP, restarts the proxier there
and expects them gone.
"""

from __future__ import annotations

import pytest

from harness.api import Outcome, PortSpec, expect_reached, expect_true, probe, probe_table

pytestmark = pytest.mark.restart


@pytest.mark.behavior(
    "service/restart/other-mode-rules-cleaned",
    must="A proxier starting on a node that holds its other mode's rules (iptables or "
         "nftables) MUST remove them, so that they no longer translate any traffic.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/cmd/kube-proxy/app/server_linux.go",
)
@pytest.mark.requires("other-mode-cleanup")
def test_rules_of_the_other_mode_are_removed_at_start(cluster, timing):
    node = cluster.nodes[1]
    old = cluster.add_pod(cluster.nodes[0])
    gone = cluster.create_service([old], ports=[PortSpec(80, 8080, "TCP")])
    objects = gone.objects()
    gone.delete()  # the API no longer has it; only the leftover rules will
    kept_pods = cluster.add_pods(2, node=cluster.nodes[0])
    kept = cluster.create_service(kept_pods, ports=[PortSpec(80, 8080, "TCP")])
    src = cluster.add_pod(node)

    mode = cluster.plant_other_mode_rules(node, objects)
    story = (f"{src.name} on {node.name} -> {gone.cluster_ip}:80, the ClusterIP of deleted "
             f"{gone.name}, with its {mode}-mode rules left on {node.name}")
    expect_reached(probe(src, gone.cluster_ip, 80, "tcp", count=2), [old],
                   f"control: {story}: the leftover rules translate it")

    cluster.env.restart_proxier(node.name)
    cluster.env.sync()  # the restarted proxier has synced
    obs = probe(src, gone.cluster_ip, 80, "tcp", count=3, timeout=timing.silence_s)
    answered = [o for o in obs if o.outcome is Outcome.REPLY]
    expect_true(not answered, f"{story}, after the proxier on {node.name} restarted: "
                              f"{len(answered)} of {len(obs)} probes still reached {old.name}",
                probe_table(obs))
    expect_reached(probe(src, kept.cluster_ip, 80, "tcp", count=4), kept_pods,
                   f"{src.name} -> {kept.name} {kept.cluster_ip}:80 after the restart")
