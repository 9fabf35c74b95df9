"""MarkObserver, conntrack_entries and dump_rules against real kernels rules (root only).

Each test builds its own three namespaces: ``vdt-test-<id>-a`` (the "node": proxier rules,
observer, and a local client), ``vdt-test-<id>-b`` (the "pod": a TCP server on 8080 and 8081
that answers with the source address it saw) and ``vdt-test-<id>-c`` (an external client
whose traffic the node forwards), joined by veths created inside the namespaces
(a 192.0.2.1/25 <-> b 192.0.2.2/25; a 192.0.2.129/25 <-> c 192.0.2.130/25). In -a, rules in the
style of kube-proxy send "service" 198.51.100.10:80 to 192.0.2.2:8080 *with* the masquerade
mark and 198.51.100.11:80 to 192.0.2.2:8081 *without* it, then clear the mark and
MASQUERADE in nat POSTROUTING -- in each flavour: iptables-legacy, iptables-nft, and native
nftables (kube-proxy's nftables mode). Nothing is created in the root namespace; a module
fixture checks the root namespace's links and nft tables are unchanged.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from harness import netfilter as nf

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, netfilter)"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft"),
]

PY = sys.executable
MARKED_VIP, UNMARKED_VIP = "198.51.100.10", "198.51.100.11"
POD = "192.0.2.2"
NODE_TO_POD, CLIENT = "192.0.2.1", "192.0.2.130"

# Written in the shape kube-proxy's iptables mode uses (kube-proxy-notes section 2.2).
IPTABLES_RULES = f"""\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A OUTPUT -j KUBE-SERVICES
-A PREROUTING -j KUBE-SERVICES
-A POSTROUTING -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SERVICES -d {MARKED_VIP}/32 -p tcp -m comment --comment "t/marked:p80 cluster IP" --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d {MARKED_VIP}/32 -p tcp -m comment --comment "t/marked:p80 cluster IP" --dport 80 -j DNAT --to-destination {POD}:8080
-A KUBE-SERVICES -d {UNMARKED_VIP}/32 -p tcp -m comment --comment "t/plain:p80 cluster IP" --dport 80 -j DNAT --to-destination {POD}:8081
COMMIT
"""

# The same in the shape of kube-proxy's nftables mode (kube-proxy-notes section 5).
NFT_RULES = f"""\
table ip kube-proxy {{
  chain mark-for-masquerade {{
    meta mark set meta mark | 0x4000
  }}
  chain masquerading {{
    type nat hook postrouting priority 100; policy accept;
    meta mark & 0x4000 == 0 return
    meta mark set meta mark ^ 0x4000
    masquerade fully-random
  }}
  chain services {{
    ip daddr {MARKED_VIP} tcp dport 80 jump mark-for-masquerade
    ip daddr {MARKED_VIP} tcp dport 80 dnat to {POD}:8080
    ip daddr {UNMARKED_VIP} tcp dport 80 dnat to {POD}:8081
  }}
  chain nat-output {{
    type nat hook output priority -100; policy accept;
    jump services
  }}
  chain nat-prerouting {{
    type nat hook prerouting priority -100; policy accept;
    jump services
  }}
}}
"""

SERVER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in (8080, 8081):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        c, addr = key.fileobj.accept()
        c.sendall(f"{addr[0]}".encode()); c.close()
"""

CLIENT_SCRIPT = r"""
import socket, sys
for target in sys.argv[1:]:
    host, port, count = target.split(":")
    for _ in range(int(count)):
        s = socket.create_connection((host, int(port)), timeout=3)
        s.sendall(b"probe")
        print(target, s.recv(64).decode())
        s.close()
"""


def sh(*argv: str, input: str | None = None) -> str:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(argv)} failed: {proc.stderr}"
    return proc.stdout


def _root_state() -> tuple[str, str]:
    links = sh("ip", "-o", "link", "show")
    names = "\n".join(sorted(line.split(":")[1].strip() for line in links.splitlines()))
    return names, sh("nft", "list", "tables")


@pytest.fixture(scope="module", autouse=True)
def root_namespace_untouched() -> Iterator[None]:
    before = _root_state()
    yield
    assert _root_state() == before, "the root namespace's links or nft tables changed"


@dataclass
class Lab:
    a: str
    b: str
    c: str
    flavour: str
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def connect(self, origin: str = "local", **counts: int) -> list[str]:
        """counts: marked=N, plain=M new TCP connections through the "services", from the
        node itself (origin "local") or from the external client (origin "forwarded").
        Returns the source address the pod saw, per connection."""
        targets = []
        if counts.get("marked"):
            targets.append(f"{MARKED_VIP}:80:{counts['marked']}")
        if counts.get("plain"):
            targets.append(f"{UNMARKED_VIP}:80:{counts['plain']}")
        ns = self.a if origin == "local" else self.c
        out = sh("ip", "netns", "exec", ns, PY, "-c", CLIENT_SCRIPT, *targets)
        return out.splitlines()


def _install_proxier_rules(lab: Lab) -> None:
    if lab.flavour == "nftables":
        sh("ip", "netns", "exec", lab.a, "nft", "-f", "-", input=NFT_RULES)
    else:
        tool = {"iptables-legacy": "iptables-legacy-restore",
                "iptables-nft": "iptables-nft-restore"}[lab.flavour]
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
        sh("ip", "netns", "exec", lab.a, tool, "--noflush", input=IPTABLES_RULES)


@pytest.fixture(params=["iptables-legacy", "iptables-nft", "nftables"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    rid = uuid.uuid4().hex[:6]
    lab = Lab(f"vdt-test-{rid}-a", f"vdt-test-{rid}-b", f"vdt-test-{rid}-c", request.param)
    try:
        # Setup in stages, each registering its cleanup first, so a failed setup still
        # removes what it made (namespaces take their veth ends with them).
        for ns in (lab.a, lab.b, lab.c):
            sh("ip", "netns", "add", ns)
            lab.cleanups.append(lambda ns=ns: subprocess.run(["ip", "netns", "del", ns],
                                                             capture_output=True))
        # Veths are created inside -a with the peer moved straight out: never in root.
        for dev, peer, ns in (("va", "vb", lab.b), ("vac", "vc", lab.c)):
            sh("ip", "netns", "exec", lab.a, "ip", "link", "add", dev, "type", "veth", "peer",
               "name", peer, "netns", ns)
        for ns, dev, addr in ((lab.a, "va", f"{NODE_TO_POD}/25"), (lab.b, "vb", f"{POD}/25"),
                              (lab.a, "vac", "192.0.2.129/25"), (lab.c, "vc", f"{CLIENT}/25")):
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", addr, "dev", dev)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        # The "service" VIPs are routed towards the pod, as a node routes a ClusterIP; the
        # client and the pod route everything via the node, which forwards (a per-netns
        # sysctl of -a, not the root namespace's).
        sh("ip", "netns", "exec", lab.a, "ip", "route", "add", "default", "via", POD)
        sh("ip", "netns", "exec", lab.b, "ip", "route", "add", "default", "via", NODE_TO_POD)
        sh("ip", "netns", "exec", lab.c, "ip", "route", "add", "default", "via", "192.0.2.129")
        sh("ip", "netns", "exec", lab.a, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        server = subprocess.Popen(["ip", "netns", "exec", lab.b, PY, "-c", SERVER],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)

        def stop_server() -> None:
            os.killpg(server.pid, signal.SIGTERM)  # our own session: the server only
            server.wait(timeout=10)

        lab.cleanups.append(stop_server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        _install_proxier_rules(lab)
        yield lab
    finally:
        for fn in reversed(lab.cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - keep cleaning; report at the end
                print(f"cleanup of {lab.a}/{lab.b} failed: {e!r}", file=sys.stderr)
        left = [ns for ns in (lab.a, lab.b, lab.c) if ns in sh("ip", "netns", "list")]
        assert not left, f"namespaces left behind: {left}"


@pytest.mark.parametrize("origin", ["local", "forwarded"])
def test_counts_marked_and_unmarked_flows(lab: Lab, origin: str) -> None:
    with nf.MarkObserver(lab.a, daddr=POD, dport=8080) as to_marked, \
            nf.MarkObserver(lab.a, daddr=POD, dport=8081) as to_plain, \
            nf.MarkObserver(lab.a, orig_daddr=MARKED_VIP, orig_dport=80) as by_vip:
        replies = lab.connect(origin, marked=3, plain=2)
        seen = [line.split()[1] for line in replies]
        # The mark is what masquerades: marked flows reach the pod from the node's address.
        unmasq = NODE_TO_POD if origin == "local" else CLIENT
        assert seen == [NODE_TO_POD] * 3 + [unmasq] * 2, replies
        # One count per new flow (the SYN), though each flow sent several packets.
        assert to_marked.read() == (3, 0), to_marked.ruleset()
        assert to_plain.read() == (0, 2), to_plain.ruleset()
        assert by_vip.read() == (3, 0), by_vip.ruleset()


def test_observer_sees_the_mark_that_nat_postrouting_clears(lab: Lab) -> None:
    """Control: a counter after nat postrouting (priority 101) sees the mark already gone."""
    after = f"""table ip vdt_after {{
      counter marked {{ }}
      counter unmarked {{ }}
      chain post {{
        type filter hook postrouting priority 101; policy accept;
        ct status ! confirmed ip daddr {POD} tcp dport 8080 meta mark & 0x4000 == 0x4000 counter name "marked"
        ct status ! confirmed ip daddr {POD} tcp dport 8080 meta mark & 0x4000 != 0x4000 counter name "unmarked"
      }}
    }}
    """
    sh("ip", "netns", "exec", lab.a, "nft", "-f", "-", input=after)
    with nf.MarkObserver(lab.a, daddr=POD, dport=8080) as obs:
        lab.connect(marked=4)
        assert obs.read() == (4, 0)
    counters = sh("ip", "netns", "exec", lab.a, "nft", "list", "counters", "table", "ip",
                  "vdt_after")
    marked_after = counters.split("counter marked")[1].split("packets ")[1].split()[0]
    unmarked_after = counters.split("counter unmarked")[1].split("packets ")[1].split()[0]
    assert (marked_after, unmarked_after) == ("0", "4"), counters


def test_observer_removes_itself_and_its_table(lab: Lab) -> None:
    one = nf.MarkObserver(lab.a, daddr=POD, dport=8080).install()
    two = nf.MarkObserver(lab.a, daddr=POD, dport=8081).install()
    one.remove()
    lab.connect(plain=1)
    assert two.read() == (0, 1)  # the other observer in the same table keeps working
    two.remove()
    tables = sh("ip", "netns", "exec", lab.a, "nft", "list", "tables")
    assert nf.OBSERVER_TABLE not in tables
    two.remove()  # idempotent


def test_conntrack_and_rule_dump(lab: Lab) -> None:
    lab.connect(marked=2, plain=1)
    entries = nf.conntrack_entries(lab.a, proto="tcp", orig_dst=MARKED_VIP)
    assert len(entries) == 2, entries
    for e in entries:
        assert e.dnat and e.reply.src == POD and e.reply.sport == 8080 and e.orig.dport == 80
    assert len(nf.conntrack_entries(lab.a, proto="tcp", orig_dport=80)) == 3
    assert nf.conntrack_entries(lab.a, proto="udp") == []

    dump = nf.dump_rules(lab.a)
    assert dump.flavours == [lab.flavour], str(dump)
    sub = nf.rules_for_service(dump, "t/marked:p80" if lab.flavour != "nftables" else None,
                               ip=MARKED_VIP if lab.flavour == "nftables" else None)
    assert MARKED_VIP in sub and UNMARKED_VIP not in sub, sub
    if lab.flavour != "nftables":
        assert "KUBE-MARK-MASQ -j MARK" in sub  # reached by following the jump
