"""A virtual packet tracer over rendered rules, with kube-proxy's test semantics.

Like ``tracePacket`` in kube-proxy's proxier_test.go: run the nat KUBE-SERVICES chain (what
PREROUTING/OUTPUT jump to), apply the first DNAT to the destination, then the filter
chains KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-NODEPORTS and KUBE-PROXY-FIREWALL.
Probabilistic jumps are all followed (the output lists every reachable endpoint); rules
that depend on history (``-m recent --rcheck``, marks, conntrack state) never match.
Returns (output, masqueraded, matched rules) where output is ``"ip:port, ip:port"``,
``"REJECT"``, ``"DROP"``, ``"ACCEPT"`` or ``""``.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field

from tests.unit.refproxier.iptdump import parse

LOCAL_IPS = ("127.0.0.1", "::1", "192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2")


@dataclass
class _Rule:
    raw: str
    src: tuple[str, bool] | None = None  # (address or CIDR, negated)
    dst: tuple[str, bool] | None = None
    src_type: tuple[str, bool] | None = None
    dst_type: tuple[str, bool] | None = None
    proto: str | None = None
    dport: str | None = None
    history: bool = False  # recent --rcheck, mark or ctstate match
    probability: str | None = None
    jump: str | None = None
    dnat: str | None = None


def _parse_rule(raw: str) -> _Rule:
    words = shlex.split(raw)[2:]  # drop "-A CHAIN"
    r = _Rule(raw)
    neg = False
    i = 0
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w == "!":
            neg = True
            i += 1
            continue
        if w == "-j":
            r.jump = nxt
            rest = words[i + 2 :]
            if "--to-destination" in rest:
                r.dnat = rest[rest.index("--to-destination") + 1]
            break
        if w == "-s":
            r.src = (nxt, neg)
        elif w == "-d":
            r.dst = (nxt, neg)
        elif w == "--src-type":
            r.src_type = (nxt, neg)
        elif w == "--dst-type":
            r.dst_type = (nxt, neg)
        elif w == "-p":
            r.proto = nxt
        elif w == "--dport":
            r.dport = nxt
        elif w == "--probability":
            r.probability = nxt
        elif w in ("--rcheck", "--mark", "--ctstate"):
            r.history = True
        if w in ("--rcheck", "--reap", "--set"):
            i += 1
        else:
            i += 2 if w.startswith("-") else 1
        neg = False
    return r


def _addr_matches(spec: tuple[str, bool], ip: str) -> bool:
    value, neg = spec
    addr = ipaddress.ip_address(ip)
    if "/" in value:
        net = ipaddress.ip_network(value, strict=False)
        m = addr.version == net.version and addr in net
    else:
        m = addr == ipaddress.ip_address(value)
    return m != neg


@dataclass
class Tracer:
    text: str
    local_ips: tuple[str, ...] = LOCAL_IPS
    matches: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    masq: bool = False

    def __post_init__(self) -> None:
        self.tables = {
            name: {c: [_parse_rule(r) for r in rules] for c, rules in t.chains.items()}
            for name, t in parse(self.text).items()
        }

    def _type(self, ip: str) -> str:
        return "LOCAL" if ip in self.local_ips else "not-matched"

    def _matches(self, r: _Rule, src: str, proto: str, dst: str, dport: str) -> bool:
        if r.src and not _addr_matches(r.src, src):
            return False
        if r.src_type and (self._type(src) == r.src_type[0]) == r.src_type[1]:
            return False
        if r.proto and r.proto != proto:
            return False
        if r.dst and not _addr_matches(r.dst, dst):
            return False
        if r.dst_type and (self._type(dst) == r.dst_type[0]) == r.dst_type[1]:
            return False
        if r.dport and r.dport != dport:
            return False
        return not r.history

    def run(self, table: str, chain: str, src: str, proto: str, dst: str, dport: str) -> bool:
        for r in self.tables.get(table, {}).get(chain, []):
            if r.jump is None or not self._matches(r, src, proto, dst, dport):
                continue
            self.matches.append(r.raw)
            if r.jump == "KUBE-MARK-MASQ":
                self.masq = True
            elif r.jump in ("ACCEPT", "REJECT", "DROP"):
                self.outputs.append(r.jump)
                return True
            elif r.jump == "DNAT":
                self.outputs.append(r.dnat or "")
                return True
            else:
                done = self.run(table, r.jump, src, proto, dst, dport)
                if done and r.probability is None:
                    return True
        return False


def trace(text: str, src: str, dst: str, dport: int, proto: str = "tcp") -> tuple[str, bool, list[str]]:
    t = Tracer(text)
    port = str(dport)
    t.run("nat", "KUBE-SERVICES", src, proto, dst, port)
    if t.outputs:
        host = t.outputs[0].rsplit(":", 1)[0]
        dst = host.strip("[]")
    for chain in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"):
        t.run("filter", chain, src, proto, dst, port)
    return ", ".join(t.outputs), t.masq, t.matches
