"""Incremental syncs: applied on top of the previous table they must give exactly the table
a full sync gives (kube-proxy's TestSyncProxyRulesRepeated sequence), touch only changed
services in partial syncs, and keep affinity sets."""

from __future__ import annotations

import pytest

from refproxier.nftables import render_nft
from refproxier.proxystate import ProxyState, changed_services
from tests.unit.refproxier.builders import ep, eps_slice, port, proxy_state, service
from tests.unit.refproxier_nft.builders import nft_config
from tests.unit.refproxier_nft.nftscript import Table, load

CFG = nft_config()


def svc(n: int, ip: str, p: int = 80, **kw: object) -> dict:
    return service(f"ns{n}", f"svc{n}", ip, [port(f"p{p}", p)], **kw)  # type: ignore[arg-type]


def sl(n: int, ips: list[str], p: int = 80) -> dict:
    return eps_slice(f"ns{n}", f"svc{n}", [ep(i) for i in ips], [{"name": f"p{p}", "port": p, "protocol": "TCP"}])


# The sequence of TestSyncProxyRulesRepeated (pkg/proxy/nftables/proxier_test.go).
STEPS: list[list[dict]] = [
    [svc(1, "172.30.0.41"), svc(2, "172.30.0.42", 8080), sl(1, ["10.0.1.1"]), sl(2, ["10.0.2.1"], 8080)],
    # add a service and its endpoints
    [svc(1, "172.30.0.41"), svc(2, "172.30.0.42", 8080), svc(3, "172.30.0.43"),
     sl(1, ["10.0.1.1"]), sl(2, ["10.0.2.1"], 8080), sl(3, ["10.0.3.1"])],
    # delete a service
    [svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), sl(1, ["10.0.1.1"]), sl(3, ["10.0.3.1"])],
    # add a service, then its endpoints
    [svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), svc(4, "172.30.0.44"), sl(1, ["10.0.1.1"]), sl(3, ["10.0.3.1"])],
    [svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), svc(4, "172.30.0.44"),
     sl(1, ["10.0.1.1"]), sl(3, ["10.0.3.1"]), sl(4, ["10.0.4.1"])],
    # change an endpoint, add one, empty, restore
    [svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), svc(4, "172.30.0.44"),
     sl(1, ["10.0.1.1"]), sl(3, ["10.0.3.2"]), sl(4, ["10.0.4.1"])],
    [svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), svc(4, "172.30.0.44"),
     sl(1, ["10.0.1.1"]), sl(3, ["10.0.3.2", "10.0.3.3"]), sl(4, ["10.0.4.1"])],
    [svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), svc(4, "172.30.0.44"),
     sl(1, ["10.0.1.1"]), sl(3, []), sl(4, ["10.0.4.1"])],
    [svc(1, "172.30.0.41"), svc(3, "172.30.0.43"), svc(4, "172.30.0.44"),
     sl(1, ["10.0.1.1"]), sl(3, ["10.0.3.2", "10.0.3.3"]), sl(4, ["10.0.4.1"])],
    # affinity on, a NodePort/LB with source ranges, then everything gone
    [svc(1, "172.30.0.41", affinity=100), svc(5, "172.30.0.45", type="LoadBalancer", lb_ips=["1.2.3.4"],
                                               source_ranges=["203.0.113.0/25"], etp="Local"),
     sl(1, ["10.0.1.1", "10.0.1.2"]), sl(5, ["10.0.5.1"])],
    [svc(1, "172.30.0.41", affinity=100), sl(1, ["10.0.1.2"])],
    [],
]


def _states() -> list[ProxyState]:
    return [proxy_state(*objs, config=CFG) for objs in STEPS]


@pytest.mark.parametrize("mode", ["partial", "full-in-place"])
def test_incremental_syncs_converge_to_the_full_table(mode: str):
    states = _states()
    table = load(render_nft(states[0], CFG))
    for prev, cur in zip(states, states[1:], strict=False):
        changed = changed_services(prev, cur) if mode == "partial" else None
        table.apply(render_nft(cur, CFG, changed=changed, previous=prev))
        assert table == load(render_nft(cur, CFG))


def test_partial_sync_touches_only_changed_services():
    a = proxy_state(*STEPS[5], config=CFG)
    b = proxy_state(*STEPS[6], config=CFG)
    assert changed_services(a, b) == {"ns3/svc3"}
    text = render_nft(b, CFG, changed={"ns3/svc3"}, previous=a)
    chains = {line.split()[4] for line in text.splitlines() if line.split()[1] in ("chain", "rule")}
    assert chains and all("ns3/svc3" in c for c in chains)
    # Set and map contents are updated by difference, not flushed.
    assert not any(line.startswith(("flush set", "flush map")) for line in text.splitlines())


def test_sync_without_changes_is_empty():
    a = proxy_state(*STEPS[4], config=CFG)
    assert render_nft(a, CFG, changed=set(), previous=a) == ""


def test_emptied_service_rejects_and_its_chains_are_deleted():
    a = proxy_state(*STEPS[6], config=CFG)
    b = proxy_state(*STEPS[7], config=CFG)
    lines = render_nft(b, CFG, changed={"ns3/svc3"}, previous=a).splitlines()
    assert "delete element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 }" in lines
    assert ('add element ip kube-proxy no-endpoint-services { 172.30.0.43 . tcp . 80 comment "ns3/svc3:p80" '
            ": goto reject-chain }") in lines
    deleted = sorted(line.split()[4] for line in lines if line.startswith("delete chain"))
    assert deleted == [
        "endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80",
        "endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80",
        "service-4AT6LBPK-ns3/svc3/tcp/p80",
    ]


def test_affinity_sets_survive_incremental_syncs():
    a = proxy_state(*STEPS[9], config=CFG)
    b = proxy_state(*STEPS[10], config=CFG)
    for changed in (None, changed_services(a, b)):
        lines = render_nft(b, CFG, changed=changed, previous=a).splitlines()
        kept = "affinity-" + "ns1/svc1/tcp/p80__10.0.1.2/80"
        assert not any(line.startswith("delete table") for line in lines)
        assert not any(line.startswith(("delete set", "flush set")) and line.endswith(kept[9:]) for line in lines)
        gone = [line for line in lines if line.startswith("delete set")]
        assert len(gone) == 1 and gone[0].endswith("ns1/svc1/tcp/p80__10.0.1.1/80")


def test_table_model_rejects_what_nft_rejects():
    t = Table()
    t.apply('add table ip kube-proxy { comment "x" ; }\nadd chain ip kube-proxy a\nadd chain ip kube-proxy b')
    t.apply("add rule ip kube-proxy a goto b")
    with pytest.raises(Exception, match="busy"):
        t.apply("delete chain ip kube-proxy b")


def test_changed_affinity_timeout_recreates_the_set():
    # nft refuses "add set" with another timeout for an existing set.
    a = proxy_state(*STEPS[10], config=CFG)
    b = proxy_state(svc(1, "172.30.0.41", affinity=200), sl(1, ["10.0.1.2"]), config=CFG)
    lines = render_nft(b, CFG, changed=changed_services(a, b), previous=a).splitlines()
    name = "ip kube-proxy affinity-"
    sets = [line for line in lines if " set " in f" {line} " and "affinity-" in line]
    assert sets[0].startswith("delete set " + name) and sets[1].startswith("add set " + name)
    assert sets[1].endswith("timeout 200s ; }")
    table = load(render_nft(a, CFG))
    table.apply("\n".join(lines))
    assert table == load(render_nft(b, CFG))
