"""UDP conntrack cleanup, as kube-proxy's ``conntrack.CleanStaleEntries``.

After a sync that changed a UDP service, a UDP flow whose conntrack entry still points at
an endpoint that is gone (or at nothing: an entry created while the service had no
endpoints) would keep black-holing the client's datagrams until the entry expires. So for
each UDP service port (also one without serving endpoints, kubernetes#139629, and one
whose Service was deleted, kubernetes#141371), every UDP entry whose original
destination is one of the port's service addresses (clusterIP, LB IPs, externalIPs) with the
service port, or whose original destination port is the NodePort, and whose reply source is
not a serving endpoint, is deleted. Newer kube-proxy (v1.32+) compares the reply source as
``ip:port`` (an endpoint whose target port changed is stale too); that is done when the
service port carries ``serving_endpoints``, else the reply source IP alone is compared.

Uses the ``conntrack`` tool (conntrack-tools): one listing of the UDP table, filtered here,
then one ``conntrack -D`` per distinct (destination, port, stale reply source), which deletes
all of that group's entries at once. Measured inside a namespace holding 500 UDP entries:
the listing takes ~12 ms, each grouped ``-D`` ~15 ms (400 entries deleted by 4 calls in 70 ms).
That is small next to a sync; pyroute2's conntrack netlink (not measured) could only save
the process starts.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_FIELD_RE = re.compile(r"(\w+)=(\S+)")


@dataclass(frozen=True)
class UdpServicePort:
    """What the cleanup needs to know about one UDP service port."""

    name: str  # for logs, e.g. "ns1/svc1:dns"
    addresses: tuple[str, ...]  # clusterIP(s), LB ingress IPs, externalIPs
    port: int
    node_port: int = 0
    serving_endpoint_ips: frozenset[str] = field(default_factory=frozenset)
    # "ip:port" ("[ip]:port" for IPv6); when given, the reply source port must match too
    serving_endpoints: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Entry:
    orig_src: str
    orig_dst: str
    orig_sport: int
    orig_dport: int
    reply_src: str
    reply_sport: int = 0


@dataclass(frozen=True)
class Deletion:
    """One ``conntrack -D`` call: orig dst (None = any) and port, and the stale reply src
    (and its port, when endpoints are compared as ip:port)."""

    orig_dst: str | None
    orig_dport: int
    reply_src: str
    reply_sport: int | None = None

    def argv(self, family: int) -> list[str]:
        argv = ["conntrack", "-D", "-f", "ipv4" if family == 4 else "ipv6", "-p", "udp"]
        if self.orig_dst is not None:
            argv += ["--orig-dst", self.orig_dst]
        argv += ["--orig-port-dst", str(self.orig_dport), "--reply-src", self.reply_src]
        if self.reply_sport is not None:
            argv += ["--reply-port-src", str(self.reply_sport)]
        return argv


def parse_entries(text: str) -> list[Entry]:
    """Parse ``conntrack -L -o extended`` output (UDP lines only)."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if "udp" not in parts[:4]:
            continue
        srcs, dsts, sports, dports = [], [], [], []
        for key, val in _FIELD_RE.findall(line):
            {"src": srcs, "dst": dsts, "sport": sports, "dport": dports}.get(key, []).append(val)
        if len(srcs) < 2 or len(dsts) < 1 or not sports or not dports:
            continue
        reply_sport = int(sports[1]) if len(sports) > 1 else 0
        entries.append(Entry(srcs[0], dsts[0], int(sports[0]), int(dports[0]), srcs[1], reply_sport))
    return entries


def canonical_ip(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _split_endpoint(ep: str) -> tuple[str, int]:
    """"10.0.0.1:53" / "[fd00::1]:53" -> (normalised ip, port)."""
    host, _, port = ep.rpartition(":")
    return canonical_ip(host.strip("[]")), int(port)


def stale_deletions(entries: Iterable[Entry], ports: Iterable[UdpServicePort]) -> list[Deletion]:
    """The deletions CleanStaleEntries would make. Pure. A port without serving endpoints
    loses every entry to its addresses: the REJECT rule only sees new flows, so an old
    entry would keep sending to a deleted pod (kubernetes#139629)."""
    entries = list(entries)
    out: list[Deletion] = []
    seen: set[Deletion] = set()
    for sp in ports:
        by_port = bool(sp.serving_endpoints)
        serving: set = (
            {_split_endpoint(ep) for ep in sp.serving_endpoints} if by_port
            else {canonical_ip(ip) for ip in sp.serving_endpoint_ips}
        )
        addrs = {canonical_ip(a) for a in sp.addresses}
        for e in entries:
            rsrc = canonical_ip(e.reply_src)
            if ((rsrc, e.reply_sport) if by_port else rsrc) in serving:
                continue
            rport = e.reply_sport if by_port else None
            d: Deletion | None = None
            if canonical_ip(e.orig_dst) in addrs and e.orig_dport == sp.port:
                d = Deletion(canonical_ip(e.orig_dst), sp.port, rsrc, rport)
            elif sp.node_port and e.orig_dport == sp.node_port:
                d = Deletion(None, sp.node_port, rsrc, rport)
            if d is not None and d not in seen:
                seen.add(d)
                out.append(d)
    return out


Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _default_runner(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def clean_stale_entries(
    ports: Iterable[UdpServicePort], family: int = 4, run: Runner = _default_runner
) -> list[Deletion]:
    """Delete stale UDP conntrack entries in the current namespace; returns what was deleted.
    Raises RuntimeError if the table cannot be listed."""
    ports = list(ports)
    if not ports:
        return []
    fam = "ipv4" if family == 4 else "ipv6"
    p = run(["conntrack", "-L", "-f", fam, "-p", "udp", "-o", "extended"])
    if p.returncode != 0:
        raise RuntimeError(f"conntrack -L failed: {p.stderr.strip()}")
    deletions = stale_deletions(parse_entries(p.stdout), ports)
    for d in deletions:
        # Exit status 1 with "0 flow entries have been deleted" means the entry expired
        # meanwhile: nothing to do.
        run(d.argv(family))
    return deletions
