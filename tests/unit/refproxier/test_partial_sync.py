"""Partial syncs, as kube-proxy's TestSyncProxyRulesRepeated: only changed services' chains
are rewritten, stale chains are flushed and deleted, a full sync rewrites everything."""

from refproxier.iptables import render
from refproxier.proxystate import changed_services
from tests.unit.refproxier.builders import ep, eps_slice, fake_config, port, proxy_state, service
from tests.unit.refproxier.iptdump import normalize, parse

CONFIG = fake_config(nfacct=False)  # this kube-proxy test predates the nfacct matches

FILTER = """
    *filter
    :KUBE-NODEPORTS - [0:0]
    :KUBE-SERVICES - [0:0]
    :KUBE-EXTERNAL-SERVICES - [0:0]
    :KUBE-FIREWALL - [0:0]
    :KUBE-FORWARD - [0:0]
    :KUBE-PROXY-FIREWALL - [0:0]
    {extra}
    -A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
    -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
    -A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
    -A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    COMMIT
"""
NAT_HEAD = """
    *nat
    :KUBE-NODEPORTS - [0:0]
    :KUBE-SERVICES - [0:0]
    :KUBE-MARK-MASQ - [0:0]
    :KUBE-POSTROUTING - [0:0]
    -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
    -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
    -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
    -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
    -A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
"""
SVC1_TOP = '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O'
SVC2_TOP = '-A KUBE-SERVICES -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 -j KUBE-SVC-2VJB64SDSIJUP5T6'
SVC3_TOP = '-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK'
SVC4_TOP = '-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK'
SVC1_CHAINS = """
    :KUBE-SEP-SNQ3ZNILQDEJNDQO - [0:0]
    :KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
    -A KUBE-SEP-SNQ3ZNILQDEJNDQO -m comment --comment ns1/svc1:p80 -s 10.0.1.1 -j KUBE-MARK-MASQ
    -A KUBE-SEP-SNQ3ZNILQDEJNDQO -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.1.1:80
    -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
    -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -j KUBE-SEP-SNQ3ZNILQDEJNDQO
"""
SVC2_CHAINS = """
    :KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]
    :KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]
    -A KUBE-SEP-UHEGFW77JX3KXTOV -m comment --comment ns2/svc2:p8080 -s 10.0.2.1 -j KUBE-MARK-MASQ
    -A KUBE-SEP-UHEGFW77JX3KXTOV -m comment --comment ns2/svc2:p8080 -m tcp -p tcp -j DNAT --to-destination 10.0.2.1:8080
    -A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
    -A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 -> 10.0.2.1:8080" -j KUBE-SEP-UHEGFW77JX3KXTOV
"""
SVC3_CHAINS_ONE = """
    :KUBE-SEP-BSWRHOQ77KEXZLNL - [0:0]
    :KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
    -A KUBE-SEP-BSWRHOQ77KEXZLNL -m comment --comment ns3/svc3:p80 -s 10.0.3.1 -j KUBE-MARK-MASQ
    -A KUBE-SEP-BSWRHOQ77KEXZLNL -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.3.1:80
    -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
    -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.1:80" -j KUBE-SEP-BSWRHOQ77KEXZLNL
"""
SVC3_CHAINS_MOVED = """
    :KUBE-SEP-BSWRHOQ77KEXZLNL - [0:0]
    :KUBE-SEP-DKCFIS26GWF2WLWC - [0:0]
    :KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
    -A KUBE-SEP-DKCFIS26GWF2WLWC -m comment --comment ns3/svc3:p80 -s 10.0.3.2 -j KUBE-MARK-MASQ
    -A KUBE-SEP-DKCFIS26GWF2WLWC -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.3.2:80
    -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
    -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.2:80" -j KUBE-SEP-DKCFIS26GWF2WLWC
    -X KUBE-SEP-BSWRHOQ77KEXZLNL
"""
SVC3_CHAINS_TWO = """
    :KUBE-SEP-DKCFIS26GWF2WLWC - [0:0]
    :KUBE-SEP-JVVZVJ7BSEPPRNBS - [0:0]
    :KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
    -A KUBE-SEP-DKCFIS26GWF2WLWC -m comment --comment ns3/svc3:p80 -s 10.0.3.2 -j KUBE-MARK-MASQ
    -A KUBE-SEP-DKCFIS26GWF2WLWC -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.3.2:80
    -A KUBE-SEP-JVVZVJ7BSEPPRNBS -m comment --comment ns3/svc3:p80 -s 10.0.3.3 -j KUBE-MARK-MASQ
    -A KUBE-SEP-JVVZVJ7BSEPPRNBS -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.3.3:80
    -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
    -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.2:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-DKCFIS26GWF2WLWC
    -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.3:80" -j KUBE-SEP-JVVZVJ7BSEPPRNBS
"""
SVC4_CHAINS = """
    :KUBE-SEP-AYCN5HPXMIRJNJXU - [0:0]
    :KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]
    -A KUBE-SEP-AYCN5HPXMIRJNJXU -m comment --comment ns4/svc4:p80 -s 10.0.4.1 -j KUBE-MARK-MASQ
    -A KUBE-SEP-AYCN5HPXMIRJNJXU -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.4.1:80
    -A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
    -A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.0.4.1:80" -j KUBE-SEP-AYCN5HPXMIRJNJXU
"""


def expected(*nat_parts: str, filter_extra: str = "") -> str:
    return normalize(FILTER.replace("{extra}", filter_extra) + NAT_HEAD + "\n".join(nat_parts))


class FakeNat:
    """The nat chains in the kernel after each restore (what iptables-save would list)."""

    def __init__(self) -> None:
        self.chains: set[str] = set()
        self.state = None

    def sync(self, *objs: dict, full: bool = False) -> str:
        new = proxy_state(*objs, config=CONFIG)
        changed = None if full else changed_services(self.state, new)
        text = render(new, CONFIG, changed=changed, existing_nat_chains=frozenset(self.chains))
        nat = parse(text)["nat"]
        self.chains |= set(nat.chains)
        self.chains -= set(nat.deleted)
        self.state = new
        return text


SVC1 = [service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", [ep("10.0.1.1")])]
SVC2 = [
    service("ns2", "svc2", "172.30.0.42", [port("p8080", 8080)]),
    eps_slice("ns2", "svc2", [ep("10.0.2.1")], [{"name": "p8080", "port": 8080, "protocol": "TCP"}]),
]
SVC3 = service("ns3", "svc3", "172.30.0.43")
SVC4 = service("ns4", "svc4", "172.30.0.44")


def test_repeated_syncs_rewrite_only_changed_services_and_delete_stale_chains():
    k = FakeNat()
    out = k.sync(*SVC1, *SVC2)
    assert normalize(out) == expected(SVC1_TOP, SVC2_TOP, SVC1_CHAINS, SVC2_CHAINS)

    # A new service: only its chains are written.
    eps3 = eps_slice("ns3", "svc3", [ep("10.0.3.1")])
    out = k.sync(*SVC1, *SVC2, SVC3, eps3)
    assert normalize(out) == expected(SVC1_TOP, SVC2_TOP, SVC3_TOP, SVC3_CHAINS_ONE)

    # A deleted service: its chains are flushed and deleted, nothing else rewritten.
    out = k.sync(*SVC1, SVC3, eps3)
    assert normalize(out) == expected(
        SVC1_TOP, SVC3_TOP,
        ":KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]\n:KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]\n"
        "-X KUBE-SEP-UHEGFW77JX3KXTOV\n-X KUBE-SVC-2VJB64SDSIJUP5T6",
    )

    # A service without endpoints only gets its REJECT rule.
    out = k.sync(*SVC1, SVC3, eps3, SVC4)
    reject = '-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j REJECT'
    assert normalize(out) == expected(SVC1_TOP, SVC3_TOP, filter_extra=reject)

    # Its endpoints arrive: its chains are written.
    eps4 = eps_slice("ns4", "svc4", [ep("10.0.4.1")])
    out = k.sync(*SVC1, SVC3, eps3, SVC4, eps4)
    assert normalize(out) == expected(SVC1_TOP, SVC3_TOP, SVC4_TOP, SVC4_CHAINS)

    # An endpoint moves: the service's chains are rewritten and the old SEP deleted.
    eps3 = eps_slice("ns3", "svc3", [ep("10.0.3.2")])
    out = k.sync(*SVC1, SVC3, eps3, SVC4, eps4)
    assert normalize(out) == expected(SVC1_TOP, SVC3_TOP, SVC4_TOP, SVC3_CHAINS_MOVED)

    # An endpoint is added.
    eps3 = eps_slice("ns3", "svc3", [ep("10.0.3.2"), ep("10.0.3.3")])
    out = k.sync(*SVC1, SVC3, eps3, SVC4, eps4)
    assert normalize(out) == expected(SVC1_TOP, SVC3_TOP, SVC4_TOP, SVC3_CHAINS_TWO)

    # Nothing changed: only top-level chains.
    out = k.sync(*SVC1, SVC3, eps3, SVC4, eps4)
    assert normalize(out) == expected(SVC1_TOP, SVC3_TOP, SVC4_TOP)

    # A full sync after deleting svc4 rewrites every service and deletes svc4's chains.
    out = k.sync(*SVC1, SVC3, eps3, full=True)
    assert normalize(out) == expected(
        SVC1_TOP, SVC3_TOP, SVC1_CHAINS, SVC3_CHAINS_TWO,
        ":KUBE-SEP-AYCN5HPXMIRJNJXU - [0:0]\n:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]\n"
        "-X KUBE-SEP-AYCN5HPXMIRJNJXU\n-X KUBE-SVC-4SW47YFZTEDKD3PK",
    )


def test_chains_that_are_not_kube_proxy_service_chains_are_never_deleted():
    out = render(
        proxy_state(*SVC1, config=CONFIG), CONFIG,
        existing_nat_chains=frozenset({"DOCKER", "KUBE-MARK-DROP", "CNI-HOSTPORT-DNAT", "KUBE-SVC-XPGD46QRK7WJZT7O"}),
    )
    assert not [line for line in out.splitlines() if line.startswith("-X")]


def test_unchanged_state_reports_no_changed_services_and_none_means_full():
    a = proxy_state(*SVC1, config=CONFIG)
    b = proxy_state(*SVC1, config=CONFIG)
    assert changed_services(a, b) == set()
    assert changed_services(None, b) is None
    c = proxy_state(*SVC1, *SVC2, config=CONFIG)
    assert changed_services(a, c) == {"ns2/svc2"}


def _dnat_rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("-A KUBE-SEP-") and "-j DNAT" in line]


def test_large_cluster_mode_drops_comments_and_partial_syncs_write_only_changed_services():
    # As kube-proxy's TestSyncProxyRulesLargeClusterMode (masqueradeAll, 2 x 499 endpoints).
    cfg = fake_config(masquerade_all=True)
    half = 1000 // 2 - 1
    objs = [
        service("ns1", "svc1", "172.30.0.41"),
        service("ns2", "svc2", "172.30.0.42", [port("p8080", 8080)]),
        service("ns3", "svc3", "172.30.0.43", [port("p8081", 8081)]),
        eps_slice("ns1", "svc1", [ep(f"10.0.{i % 256}.{i // 256}") for i in range(half)]),
        eps_slice("ns2", "svc2", [ep(f"10.1.{i % 256}.{i // 256}") for i in range(half)],
                  [{"name": "p8080", "port": 8080, "protocol": "TCP"}]),
    ]
    first = proxy_state(*objs, config=cfg)
    out = render(first, cfg)
    dnat = _dnat_rules(out)
    assert len(dnat) == 2 * half and all("--comment" in r for r in dnat)
    assert "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80" in dnat

    objs.append(eps_slice("ns3", "svc3", [ep("203.0.113.4"), ep("203.0.113.8"), ep("203.0.113.12")],
                          [{"name": "p8081", "port": 8081, "protocol": "TCP"}]))
    second = proxy_state(*objs, config=cfg)
    dnat = _dnat_rules(render(second, cfg, changed=changed_services(first, second)))
    assert len(dnat) == 3
    assert "-A KUBE-SEP-RUVVH7YV3PHQBDOS -m tcp -p tcp -j DNAT --to-destination 203.0.113.4:8081" in dnat

    dnat = _dnat_rules(render(second, cfg))
    assert len(dnat) == 2 * half + 3 and not any("--comment" in r for r in dnat)
    assert "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80" in dnat
