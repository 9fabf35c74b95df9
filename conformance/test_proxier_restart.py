"""Proxier restarts and flushed rules: the data plane outlives the proxier's process.

kube-proxy leaves its rules in place when it stops and rewrites them atomically when it
starts; it never flushes conntrack on start (only stale UDP entries after a sync). So
connections and UDP flows that were established through a Service keep their endpoint
across a restart (an upgrade, a crash, a node agent restart). And when someone else flushes
the tables (a firewall reload: ``iptables -t nat -F; iptables -t nat -X``), kube-proxy's
``KUBE-PROXY-CANARY`` chains disappear with them and it re-creates everything with a full
sync (``iptables.Monitor``, polling every ``--iptables-sync-period``, default 30 s); in
nftables mode it re-creates its table when it is gone.

Clients are pods on the other node than the endpoints; that node holds the flows' DNAT
state, so that is where the proxier is restarted and the tables are flushed.
"""

import time

import pytest

from harness.api import (
    Outcome,
    PortSpec,
    dump_rules,
    expect,
    native_nft_tables,
    probe,
    reached_only,
    read_greeting,
    read_line,
)

pytestmark = pytest.mark.restart

N_ENDPOINTS = 4
# A proxier that flushed conntrack would re-balance every flow: each one keeps its endpoint
# with probability 1/N, so all of them do with probability (1/4)^(8+6) ~ 4e-9.
N_TCP = 8
N_UDP = 6
UDP_SPORTS = range(41100, 41100 + N_UDP)
# kube-proxy's canary poll interval is --iptables-sync-period (default 30 s); then a full sync.
RESYNC_BOUND_S = 35.0  # kube-proxy's Monitor: 30 s poll + 5 s iptablesFlushTimeout


@pytest.mark.behavior(
    "service/restart/established-flows-survive",
    must="Established TCP connections and UDP flows through a Service MUST keep working, on "
         "the same endpoint, across a restart of the proxier on the node holding their NAT state.",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go",
)
def test_established_flows_survive_a_proxier_restart(cluster, timing):
    pods = cluster.add_pods(N_ENDPOINTS, node=cluster.nodes[0])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP", "tcp"),
                                              PortSpec(81, 8080, "UDP", "udp")])
    node = cluster.nodes[1]
    src = cluster.add_pod(node)

    socks, tcp_before = [], []
    try:
        for _ in range(N_TCP):
            s = src.socket()
            socks.append(s)
            s.connect((svc.cluster_ip, 80))
            tcp_before.append(read_greeting(s, timing.positive_s)["pod"])
        udp_before = {}
        for sport in UDP_SPORTS:
            (o,) = probe(src, svc.cluster_ip, 81, "udp", sport=sport)
            assert o.outcome is Outcome.REPLY, f"UDP flow from port {sport} never started: {o}"
            udp_before[sport] = o.pod

        cluster.env.restart_proxier(node.name)
        # A new generation acknowledged means the new process has done its first (full) sync.
        cluster.env.sync()
        # kube-proxy deletes conntrack entries just after writing a sync's rules, so the
        # probes wait for one more generation: they then follow the first sync's cleanup
        # (without it, a proxier flushing UDP flows at start-up passed when they won the race).
        cluster.env.sync()

        broken = []
        for i, (s, pod) in enumerate(zip(socks, tcp_before, strict=True)):
            msg = f"still-there-{i}\n".encode()
            try:
                s.sendall(msg)
                got = read_line(s, timing.positive_s)
                if msg.strip() not in got:
                    broken.append(f"TCP #{i} to {pod}: echoed {got!r}")
            except OSError as e:
                broken.append(f"TCP #{i} to {pod}: {type(e).__name__}: {e}")
        for sport, pod in udp_before.items():
            (o,) = probe(src, svc.cluster_ip, 81, "udp", sport=sport)
            if o.pod != pod:
                broken.append(f"UDP from port {sport}: reached {pod} before, now {o}")
    finally:
        for s in socks:
            s.close()

    assert not broken, (
        f"after restarting the proxier on {node.name}, {len(broken)} of {N_TCP + N_UDP} flows "
        f"({N_TCP} TCP connections, {N_UDP} UDP flows) to {svc.cluster_ip} broke or changed "
        "endpoint:\n  "
        + "\n  ".join(broken)
    )


def flush_commands(node, flavour, family="IPv4"):
    """What a firewall reload does to the proxier's rules on ``node``: the mangle, nat and
    filter tables of iptables (or ip6tables) emptied, chains deleted, in one restore (what
    kube-proxy's Monitor, watching the mangle canary, expects), when the proxier's
    KUBE-SERVICES is there; and every native nftables table deleted (kube-proxy's nftables
    mode: ``ip kube-proxy`` / ``ip6 kube-proxy``)."""
    cmds = []
    tool = f"{'ip6tables' if family == 'IPv6' else 'iptables'}-{flavour}"
    if ":KUBE-SERVICES" in node.run([f"{tool}-save", "-t", "nat"], check=False).stdout:
        # One restore without --noflush empties each table and deletes its chains at once;
        # table by table with -F/-X races a proxier that resyncs as soon as mangle is gone.
        empty = "".join(f"*{t}\\nCOMMIT\\n" for t in ("mangle", "nat", "filter"))
        cmds.append(["sh", "-c", f"printf '{empty}' | {tool}-restore -w"])
    ruleset = node.run(["nft", "list", "ruleset"], check=False).stdout
    cmds += [["nft", "delete", "table", fam, name] for fam, name in native_nft_tables(ruleset)]
    return cmds


@pytest.mark.behavior(
    "service/restart/rules-recreated-after-flush",
    must="After someone else flushes its rules (every iptables table flushed and its chains "
         "deleted, or its nftables table deleted), the proxier MUST re-create them (within "
         "kube-proxy's default 30 s canary period and its 5 s wait for the other tables).",
    ref="https://github.com/kubernetes/kubernetes/blob/master/pkg/util/iptables/monitor_test.go",
)
@pytest.mark.requires("resync-on-flush")
def test_rules_are_recreated_after_a_flush(cluster, timing, record_property):
    pods = cluster.add_pods(2, node=cluster.nodes[0])
    svc = cluster.create_service(pods, ports=[PortSpec(80, 8080, "TCP")])
    node = cluster.nodes[1]
    src = cluster.add_pod(node)
    names = {p.name for p in pods}
    v = reached_only(probe(src, svc.cluster_ip, 80, "tcp", count=4), names)
    expect(v, "before the flush")

    cmds = flush_commands(node, cluster.env.iptables, cluster.family)
    assert cmds, (f"no proxier rules to flush on {node.name}: neither a KUBE-SERVICES chain in "
                  f"the {cluster.family} iptables-{cluster.env.iptables} nat table nor a "
                  "native nftables table")
    flushed = time.monotonic()
    for argv in cmds:
        r = node.run(argv, check=False)
        assert r.returncode == 0, f"{' '.join(argv)} in {node.name}: {r.stderr}"
    shown = "; ".join(" ".join(c) for c in cmds)
    record_property("flush", shown)

    def works():
        obs = probe(src, svc.cluster_ip, 80, "tcp", count=2, timeout=timing.silence_s)
        return reached_only(obs, names).passed

    bound = RESYNC_BOUND_S * timing.scale + timing.positive_s
    try:
        timing.wait_for(works, f"{svc.cluster_ip}:80 to work again", timeout=bound)
    except TimeoutError:
        last = probe(src, svc.cluster_ip, 80, "tcp", count=2, timeout=timing.silence_s)
        rules = dump_rules(node.netns)
        # The rest of the run must not inherit a node without rules.
        cluster.env.restart_proxier(node.name)
        pytest.fail(
            f"{bound:.0f}s after `{shown}` on {node.name} the Service still does not work:\n"
            f"{reached_only(last, names).explain()}\nrules on {node.name} then:\n{rules}"
        )
    record_property("recovery_s", round(time.monotonic() - flushed, 3))
