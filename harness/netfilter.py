"""Evidence and observers inside a node's network namespace: rule dumps, conntrack, marks.

Everything here runs tools inside a *named* network namespace (``ip netns exec <ns> ...``)
and needs root; the parsers (``parse_iptables_save``, ``parse_conntrack_xml``, ...) and
``rules_for_service`` are pure so they can be unit-tested without root.

* ``dump_rules(netns)`` records every flavour of the rules (iptables-legacy, iptables-nft,
  ip6tables-*, native nftables) and which of them hold rules; missing tools are tolerated.
* ``rules_for_service(dump, ...)`` cuts a dump down to one Service: rules whose comment
  names it (``ns/name`` or ``ns/name:port``), rules matching its IP/port, given chains, and
  every chain reachable from those by jump/goto.
* ``conntrack_entries(netns, **filters)`` parses ``conntrack -L -o xml``.
* ``MarkObserver`` counts, in the node's namespace, how many new flows carry the masquerade
  mark (0x4000) when they reach POSTROUTING. It uses an nftables table of its own
  (``table ip svcconf_observe``) hooked at postrouting priority 99: after every place
  kube-proxy sets the mark (nat prerouting/output, priority -100, in all three flavours) and
  before nat postrouting (priority 100), where KUBE-POSTROUTING (iptables) or the
  ``masquerading`` chain (nftables mode) clears it with an xor and masquerades. A native nft
  table coexists with iptables-legacy and iptables-nft rules, so the observer works whatever
  flavour the proxier uses. Only a flow's first packet goes through the nat hooks, so only
  it carries the mark; the observer therefore counts only packets of not-yet-confirmed
  conntrack entries (``ct status ! confirmed``), i.e. one packet per new flow.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MASQ_MARK = 0x4000
OBSERVER_TABLE = "svcconf_observe"
# nat postrouting (MASQUERADE, mark clearing) runs at 100 in every flavour; observe just before.
OBSERVER_PRIORITY = 99
TOOL_TIMEOUT = 30.0

# (key, argv) of every rule listing recorded by dump_rules, in report order.
DUMP_TOOLS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("iptables-legacy", ("iptables-legacy-save",)),
    ("iptables-nft", ("iptables-nft-save",)),
    ("ip6tables-legacy", ("ip6tables-legacy-save",)),
    ("ip6tables-nft", ("ip6tables-nft-save",)),
    ("nftables", ("nft", "list", "ruleset")),
)
# Tables that iptables-nft / ebtables-nft / arptables-nft create; any other nft table is
# "native" nftables (kube-proxy's nftables mode uses ``ip kube-proxy``/``ip6 kube-proxy``).
XT_COMPAT_TABLES = frozenset(
    (fam, name) for fam in ("ip", "ip6") for name in ("filter", "nat", "mangle", "raw", "security")
) | {("bridge", "filter"), ("bridge", "nat"), ("bridge", "broute"), ("arp", "filter")}


class NetfilterError(RuntimeError):
    """A netfilter tool failed in a namespace; the message carries its command and stderr."""


def run_in_netns(netns: str, argv: Sequence[str], *, input: str | None = None,
                 check: bool = True, timeout: float = TOOL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the named network namespace (``ip netns exec``)."""
    cmd = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetfilterError(f"{shlex.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


# --------------------------------------------------------------------------- rule dumps


@dataclass
class RuleDump:
    """Every flavour's rules in one namespace, as the tools printed them.

    ``outputs`` maps a flavour key (see ``DUMP_TOOLS``) to the tool's stdout; ``errors`` maps
    a key to why it is missing (tool not installed, or its stderr). ``str(dump)`` is the
    report text.
    """

    netns: str
    outputs: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def flavours(self) -> list[str]:
        """The flavours that hold rules (xtables: any ``-A``; nftables: a native table)."""
        out = []
        for key, text in self.outputs.items():
            if key == "nftables":
                if native_nft_tables(text):
                    out.append(key)
            elif any(line.startswith("-A ") for line in text.splitlines()):
                out.append(key)
        return out

    def __str__(self) -> str:
        parts = [f"# rules in netns {self.netns}; flavours holding rules: "
                 f"{', '.join(self.flavours) or 'none'}"]
        for key, _ in DUMP_TOOLS:
            if key in self.outputs:
                parts.append(f"# ---- {key}\n{self.outputs[key].rstrip()}")
            elif key in self.errors:
                parts.append(f"# ---- {key}: unavailable ({self.errors[key]})")
        return "\n".join(parts) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"netns": self.netns, "flavours": self.flavours, "outputs": dict(self.outputs),
                "errors": dict(self.errors)}


def dump_rules(netns: str) -> RuleDump:
    """Record iptables-legacy, iptables-nft, ip6tables-* and ``nft list ruleset`` in ``netns``."""
    dump = RuleDump(netns)
    for key, argv in DUMP_TOOLS:
        if shutil.which(argv[0]) is None:
            dump.errors[key] = f"{argv[0]} not installed"
            continue
        try:
            proc = run_in_netns(netns, argv, check=False)
        except subprocess.TimeoutExpired:
            dump.errors[key] = f"{argv[0]} timed out"
            continue
        if proc.returncode != 0:
            dump.errors[key] = proc.stderr.strip() or f"exit {proc.returncode}"
        else:
            dump.outputs[key] = proc.stdout
    return dump


def native_nft_tables(ruleset: str) -> list[tuple[str, str]]:
    """(family, name) of the nft tables that are neither xtables-compat nor our observer's."""
    out = []
    for m in re.finditer(r"^table (\w+) (\S+) \{", ruleset, re.M):
        fam, name = m.group(1), m.group(2)
        if (fam, name) not in XT_COMPAT_TABLES and name != OBSERVER_TABLE:
            out.append((fam, name))
    return out


# --------------------------------------------------------------------------- iptables-save


@dataclass(frozen=True)
class IptRule:
    """One ``-A`` line of iptables-save output."""

    chain: str
    line: str
    args: tuple[str, ...]

    def _opt(self, *names: str) -> str | None:
        for i, a in enumerate(self.args[:-1]):
            if a in names:
                return self.args[i + 1]
        return None

    @property
    def target(self) -> str | None:
        return self._opt("-j", "--jump", "-g", "--goto")

    @property
    def comment(self) -> str | None:
        return self._opt("--comment")

    @property
    def destination(self) -> str | None:
        return self._opt("-d", "--destination")

    @property
    def dport(self) -> str | None:
        return self._opt("--dport", "--destination-port")


@dataclass
class IptTable:
    name: str
    chains: dict[str, str] = field(default_factory=dict)  # chain -> its ":" line
    rules: list[IptRule] = field(default_factory=list)


def parse_iptables_save(text: str) -> dict[str, IptTable]:
    """Tables of an iptables-save text, chains and rules in their original order."""
    tables: dict[str, IptTable] = {}
    cur: IptTable | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], IptTable(line[1:]))
        elif cur is None or line == "COMMIT":
            continue
        elif line.startswith(":"):
            cur.chains[line[1:].split()[0]] = line
        elif line.startswith("-A "):
            try:
                args = tuple(shlex.split(line))
            except ValueError:  # unbalanced quotes in an odd comment: keep the line, split naively
                args = tuple(line.split())
            cur.rules.append(IptRule(args[1], line, args[2:]))
    return tables


def _service_comment_re(service: str) -> re.Pattern[str]:
    # "ns/name" matches "ns/name", "ns/name:p80 cluster IP", "ns/name has no endpoints";
    # "ns/name:p80" must not match "ns/name:p8080".
    return re.compile(re.escape(service) + r"(?=$|[\s:\"])")


def _strip_prefix(addr: str | None) -> str | None:
    if addr is None:
        return None
    return addr.split("/")[0] if addr.endswith(("/32", "/128")) else addr


def _iptables_subset(text: str, service: str | None, chains: Iterable[str],
                     ip: str | None, port: int | None) -> str:
    tables = parse_iptables_save(text)
    want_re = _service_comment_re(service) if service else None
    seed_chains = set(chains)
    out = []
    for table in tables.values():
        keep: set[int] = set()
        follow: list[str] = [c for c in seed_chains if c in table.chains]
        for i, r in enumerate(table.rules):
            hit = r.chain in seed_chains
            if want_re and r.comment and want_re.match(r.comment):
                hit = True
            if ip is not None and _strip_prefix(r.destination) == ip and (
                    port is None or r.dport == str(port)):
                hit = True
            if hit:
                keep.add(i)
                if r.target:
                    follow.append(r.target)
        # Every user chain reachable from a kept rule is kept whole.
        seen: set[str] = set()
        while follow:
            c = follow.pop()
            if c in seen or c not in table.chains:
                continue
            seen.add(c)
            for i, r in enumerate(table.rules):
                if r.chain == c:
                    keep.add(i)
                    if r.target:
                        follow.append(r.target)
        if not keep:
            continue
        used = {table.rules[i].chain for i in keep} | seen
        out.append(f"*{table.name}")
        out += [decl for name, decl in table.chains.items() if name in used]
        out += [table.rules[i].line for i in sorted(keep)]
        out.append("COMMIT")
    return "\n".join(out)


# --------------------------------------------------------------------------- nft ruleset


@dataclass
class NftBlock:
    """A chain/map/set/... inside an nft table, with its body lines (braces stripped)."""

    family: str
    table: str
    kind: str
    name: str
    body: list[str]


def parse_nft_ruleset(text: str) -> list[NftBlock]:
    """Blocks (chain, map, set, counter, ...) of ``nft list ruleset`` output."""
    blocks: list[NftBlock] = []
    fam = tbl = ""
    cur: NftBlock | None = None
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if depth == 0:
            m = re.match(r"table (\w+) (\S+) \{", line)
            if m:
                fam, tbl = m.group(1), m.group(2)
                depth = 1
            continue
        if depth == 1:
            if line == "}":
                depth = 0
                continue
            m = re.match(r"(\w+) (\S+) \{$", line)
            if m:
                cur = NftBlock(fam, tbl, m.group(1), m.group(2).strip('"'), [])
                blocks.append(cur)
                depth = 2
            continue
        # inside a block: track nested braces (elements = { ... } may span lines)
        depth += line.count("{") - line.count("}")
        if depth == 1:
            cur = None
            continue
        if cur is not None and line:
            cur.body.append(line)
    return blocks


def _nft_service_key(service: str) -> tuple[str, str | None]:
    # iptables "ns/name:port" vs nft names "<hash>-ns/name/<proto>/<port>[__<ip>/<port>]"
    base, _, portname = service.partition(":")
    return base + "/", portname or None


def _nft_name_is_service(name: str, service: str) -> bool:
    base, portname = _nft_service_key(service)
    i = name.find("-" + base)
    if i < 0:
        return False
    if portname is None:
        return True
    rest = name[i + 1 + len(base):]  # "<proto>/<port>[__...]"
    parts = rest.split("__")[0].split("/")
    return len(parts) >= 2 and parts[1] == portname


_NFT_JUMP = re.compile(r"\b(?:goto|jump) (\"[^\"]+\"|\S+)")


def _nft_subset(text: str, service: str | None, chains: Iterable[str],
                ip: str | None, port: int | None) -> str:
    blocks = parse_nft_ruleset(text)
    by_name = {(b.family, b.table, b.name): b for b in blocks if b.kind == "chain"}
    want: set[tuple[str, str, str]] = set()
    seeds = set(chains)
    ip_re = re.compile(rf"(?<![\w.:]){re.escape(ip)}(?![\w.:])") if ip else None
    for key, b in by_name.items():
        if b.name in seeds or (service and _nft_name_is_service(b.name, service)):
            want.add(key)
    follow = list(want)
    kept_lines: dict[tuple[str, str, str], list[str]] = {}
    for key, b in by_name.items():
        if key in want or not ip_re:
            continue
        lines = [ln for ln in b.body if ip_re.search(ln) and (port is None or
                 re.search(rf"\bdport {port}\b", ln) or f". {port} " in ln)]
        if lines:
            kept_lines[key] = lines
            for ln in lines:
                follow += [(key[0], key[1], t.strip('"')) for t in _NFT_JUMP.findall(ln)]
    while follow:
        key = follow.pop()
        b = by_name.get(key)
        if b is None:
            continue
        want.add(key)
        for ln in b.body:
            for t in _NFT_JUMP.findall(ln):
                k = (key[0], key[1], t.strip('"'))
                if k not in want:
                    follow.append(k)
    names = {k[2] for k in want}
    out = []
    for b in blocks:
        key = (b.family, b.table, b.name)
        if b.kind == "chain" and key in want:
            out.append(f"table {b.family} {b.table} chain {b.name} {{")
            out += [f"\t{ln}" for ln in b.body]
            out.append("}")
        elif b.kind == "chain" and key in kept_lines:
            out.append(f"table {b.family} {b.table} chain {b.name} {{  # matching lines only")
            out += [f"\t{ln}" for ln in kept_lines[key]]
            out.append("}")
        elif b.kind in ("map", "set"):
            # Keep only the elements that dispatch to a kept chain or name the IP.
            elems = _nft_elements(b.body)
            hits = [e for e in elems if any(n in e for n in names) or (ip_re and ip_re.search(e))]
            if hits:
                out.append(f"table {b.family} {b.table} {b.kind} {b.name} {{  # matching elements")
                out += [f"\t{e}" for e in hits]
                out.append("}")
    return "\n".join(out)


def _nft_elements(body: Sequence[str]) -> list[str]:
    text = " ".join(body)
    m = re.search(r"elements = \{(.*)\}", text)
    if not m:
        return []
    return [e.strip() for e in m.group(1).split(",") if e.strip()]


def rules_for_service(dump: RuleDump | str, service: str | None = None, *,
                      chains: Iterable[str] = (), ip: str | None = None,
                      port: int | None = None) -> str:
    """The part of ``dump`` that concerns one Service, per flavour that holds rules.

    ``service`` is kube-proxy's service-port name (``ns/name`` or ``ns/name:port``; in nft
    mode matched against chain names ``...-ns/name/<proto>/<port>...``); ``chains`` are chain
    names to include whole; ``ip``/``port`` select rules by destination. Chains reached by
    jump/goto from anything selected are included whole. A plain string is treated as one
    iptables-save text.
    """
    if isinstance(dump, str):
        return _iptables_subset(dump, service, list(chains), ip, port)
    chains = list(chains)
    parts = []
    for key in dump.flavours:
        text = dump.outputs[key]
        sub = (_nft_subset(text, service, chains, ip, port) if key == "nftables"
               else _iptables_subset(text, service, chains, ip, port))
        if sub:
            parts.append(f"# ---- {key}\n{sub}")
    return "\n".join(parts)


# --------------------------------------------------------------------------- conntrack


@dataclass(frozen=True)
class CtTuple:
    """One direction of a conntrack entry."""

    src: str | None
    dst: str | None
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None


@dataclass(frozen=True)
class ConntrackEntry:
    """A conntrack entry: original and reply tuples, protocol, state, mark."""

    family: str  # "ipv4" | "ipv6"
    proto: str  # "tcp" | "udp" | "sctp" | "icmp" | ...
    orig: CtTuple
    reply: CtTuple
    state: str | None = None  # TCP/SCTP state, e.g. ESTABLISHED
    mark: int = 0
    timeout: int | None = None
    zone: int | None = None
    assured: bool = False
    unreplied: bool = False
    id: int | None = None

    @property
    def dnat(self) -> bool:
        """The destination was translated (e.g. a Service VIP to an endpoint)."""
        return (self.reply.src, self.reply.sport) != (self.orig.dst, self.orig.dport)

    @property
    def snat(self) -> bool:
        """The source was translated (masqueraded)."""
        return (self.reply.dst, self.reply.dport) != (self.orig.src, self.orig.sport)

    def __str__(self) -> str:
        def t(x: CtTuple) -> str:
            p = f":{x.sport}" if x.sport is not None else ""
            q = f":{x.dport}" if x.dport is not None else ""
            return f"{x.src}{p} -> {x.dst}{q}"
        flags = " ".join(f for f, on in (("ASSURED", self.assured), ("UNREPLIED", self.unreplied))
                         if on)
        return (f"{self.proto} {self.state or '-'} orig {t(self.orig)} reply {t(self.reply)} "
                f"mark={self.mark:#x} {flags}").rstrip()


def _int(el: ET.Element | None, tag: str) -> int | None:
    if el is None:
        return None
    child = el.find(tag)
    return int(child.text) if child is not None and child.text is not None else None


def _text(el: ET.Element | None, tag: str) -> str | None:
    if el is None:
        return None
    child = el.find(tag)
    return child.text if child is not None else None


def _xml_tuple(meta: ET.Element | None) -> tuple[CtTuple, str, str]:
    l3 = meta.find("layer3") if meta is not None else None
    l4 = meta.find("layer4") if meta is not None else None
    tup = CtTuple(_text(l3, "src"), _text(l3, "dst"), _int(l4, "sport"), _int(l4, "dport"),
                  _int(l4, "type"), _int(l4, "code"), _int(l4, "id"))
    fam = l3.get("protoname", "") if l3 is not None else ""
    proto = l4.get("protoname", "") if l4 is not None else ""
    return tup, fam, proto


def parse_conntrack_xml(text: str) -> list[ConntrackEntry]:
    """Entries of ``conntrack -L -o xml`` output (empty output gives no entries)."""
    if "<flow>" not in text:
        return []
    root = ET.fromstring(text[text.index("<conntrack"):] if "<conntrack" in text else text)
    out = []
    for flow in root.iter("flow"):
        metas = {m.get("direction"): m for m in flow.findall("meta")}
        orig, fam, proto = _xml_tuple(metas.get("original"))
        reply, _, _ = _xml_tuple(metas.get("reply"))
        ind = metas.get("independent")
        out.append(ConntrackEntry(
            family=fam, proto=proto, orig=orig, reply=reply,
            state=_text(ind, "state"), mark=_int(ind, "mark") or 0,
            timeout=_int(ind, "timeout"), zone=_int(ind, "zone"),
            assured=ind is not None and ind.find("assured") is not None,
            unreplied=ind is not None and ind.find("unreplied") is not None,
            id=_int(ind, "id")))
    return out


def _ct_tuple(d: Mapping[str, str]) -> CtTuple:
    def num(key: str) -> int | None:
        return int(d[key]) if key in d else None

    return CtTuple(d.get("src"), d.get("dst"), num("sport"), num("dport"), num("type"),
                   num("code"), num("id"))


def parse_conntrack_extended(text: str) -> list[ConntrackEntry]:
    """Entries of ``conntrack -L -o extended`` text (the xml form is preferred)."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 5 or f[0] not in ("ipv4", "ipv6"):
            continue
        fam, proto, timeout = f[0], f[2], int(f[4])
        rest = f[5:]
        state = None
        if rest and "=" not in rest[0] and not rest[0].startswith("["):
            state, rest = rest[0], rest[1:]
        tuples: list[dict[str, str]] = [{}, {}]
        extra: dict[str, str] = {}
        flags = set()
        idx = 0
        for tok in rest:
            if tok.startswith("["):
                flags.add(tok.strip("[]"))
                continue
            k, _, v = tok.partition("=")
            if k == "src" and idx == 0 and "src" in tuples[0]:
                idx = 1  # the second src= starts the reply tuple
            # icmp tuples carry id=; a trailing id= (``-o id``) is the entry's own id.
            tuple_key = k in ("src", "dst", "sport", "dport", "type", "code") or (
                k == "id" and "type" in tuples[idx])
            if tuple_key and k not in tuples[idx]:
                tuples[idx][k] = v
            else:
                extra[k] = v
        out.append(ConntrackEntry(
            fam, proto, _ct_tuple(tuples[0]), _ct_tuple(tuples[1]), state,
            mark=int(extra.get("mark", "0"), 0), timeout=timeout,
            zone=int(extra["zone"]) if "zone" in extra else None,
            assured="ASSURED" in flags, unreplied="UNREPLIED" in flags,
            id=int(extra["id"]) if "id" in extra else None))
    return out


# keyword -> conntrack option
CONNTRACK_FILTERS: dict[str, str] = {
    "proto": "--proto", "family": "--family", "orig_src": "--orig-src", "orig_dst": "--orig-dst",
    "reply_src": "--reply-src", "reply_dst": "--reply-dst", "orig_sport": "--orig-port-src",
    "orig_dport": "--orig-port-dst", "reply_sport": "--reply-port-src",
    "reply_dport": "--reply-port-dst", "mark": "--mark", "zone": "--zone", "state": "--state",
    "status": "--status", "src_nat": "--src-nat", "dst_nat": "--dst-nat",
}


def conntrack_args(output: str = "xml", **filters: Any) -> list[str]:
    """``conntrack -L -o <output>`` with the given filters (see ``CONNTRACK_FILTERS``).

    ``src_nat``/``dst_nat`` take True (any translation) or an address.
    """
    argv = ["conntrack", "-L", "-o", output]
    if filters.get("family") is None and any(
            isinstance(filters.get(k), str) and ":" in filters[k]
            for k in ("orig_src", "orig_dst", "reply_src", "reply_dst", "src_nat", "dst_nat")):
        # conntrack lists IPv4 only unless told otherwise; an IPv6 address says which
        filters = {**filters, "family": "ipv6"}
    # conntrack needs -p before any port option, so the protocol goes first.
    for k in sorted(filters, key=lambda k: k != "proto"):
        v = filters[k]
        if k not in CONNTRACK_FILTERS:
            raise TypeError(f"unknown conntrack filter {k!r}; known: {sorted(CONNTRACK_FILTERS)}")
        if v is None or v is False:
            continue
        argv.append(CONNTRACK_FILTERS[k])
        if v is not True:
            argv.append(str(v))
    return argv


def conntrack_entries(netns: str, *, output: str = "xml", **filters: Any) -> list[ConntrackEntry]:
    """The conntrack entries of ``netns`` (filters: see ``conntrack_args``).

    ``output="xml"`` (default) is the robust form; conntrack's xml leaves out ICMP type, code
    and id, so use ``output="extended"`` when those matter.
    """
    if output not in ("xml", "extended"):
        raise ValueError(f"output must be 'xml' or 'extended', not {output!r}")
    proc = run_in_netns(netns, conntrack_args(output, **filters), check=False)
    if proc.returncode != 0 and not proc.stdout.strip():
        # conntrack -L exits 1 when a filter matches nothing on some versions; only a real
        # error message is an error.
        if "0 flow entries" in proc.stderr:
            return []
        raise NetfilterError(f"conntrack in {netns}: {proc.stderr.strip()}")
    if output == "extended":
        return parse_conntrack_extended(proc.stdout)
    return parse_conntrack_xml(proc.stdout)


def stale_udp_entries(netns: str, serving_ips: Iterable[str], **filters: Any) -> list[ConntrackEntry]:
    """UDP entries of ``netns`` matching ``filters`` whose reply source is not one of
    ``serving_ips``: flows still translated to a removed endpoint (or, with no serving IPs,
    any flow of a Service that should have none)."""
    serving = set(serving_ips)
    return [e for e in conntrack_entries(netns, proto="udp", **filters)
            if e.reply.src not in serving]


def wait_no_stale_udp(timing: Any, netns: str, serving_ips: Iterable[str], what: str,
                      **filters: Any) -> list[ConntrackEntry]:
    """Give the proxier's conntrack cleanup ``timing``'s bounded wait; returns the entries
    still stale afterwards (empty: clean). Never raises on timeout: the caller asserts, with
    the entries as evidence."""
    serving = set(serving_ips)
    left: list[ConntrackEntry] = []

    def clean() -> bool:
        left[:] = stale_udp_entries(netns, serving, **filters)
        return not left

    try:
        timing.wait_for(clean, f"stale UDP entries for {what} to go")
    except TimeoutError:
        pass
    return left


def entries_text(entries: Sequence[ConntrackEntry]) -> str:
    """Conntrack entries for a failure message, one per indented line."""
    return "\n".join(f"  {e}" for e in entries) or "  (none)"


# --------------------------------------------------------------------------- mark observer


_observer_ids = itertools.count(1)


class MarkObserver:
    """Count new flows that carry (or lack) the masquerade mark at POSTROUTING, pre-NAT.

    Installs, in ``netns``, ``table ip svcconf_observe`` (``ip6`` for IPv6) with one base
    chain per observer at ``hook postrouting priority 99`` and two named counters. The match
    selects the flow after DNAT (``daddr``/``dport`` are the endpoint's), or by conntrack's
    original tuple (``orig_daddr``/``orig_dport``: the Service address), or a raw nft
    ``match`` expression. Only each flow's first packet is counted (the only one that went
    through nat, and so the only one that can carry the mark).

    >>> with MarkObserver("node1", daddr="10.244.1.5", dport=8080) as obs:
    ...     send_probes()
    ...     marked, unmarked = obs.read()
    """

    def __init__(self, netns: str, *, daddr: str | None = None, dport: int | None = None,
                 saddr: str | None = None, proto: str = "tcp", orig_daddr: str | None = None,
                 orig_dport: int | None = None, match: str | None = None, mark: int = MASQ_MARK,
                 priority: int = OBSERVER_PRIORITY, ipv6: bool | None = None,
                 first_packet_only: bool = True) -> None:
        self.netns = netns
        if ipv6 is None:
            ipv6 = any(a is not None and ":" in a for a in (daddr, saddr, orig_daddr))
        self.family = "ip6" if ipv6 else "ip"
        addr = "ip6" if ipv6 else "ip"
        parts = []
        if first_packet_only:
            parts.append("ct status ! confirmed")
        if saddr:
            parts.append(f"{addr} saddr {saddr}")
        if daddr:
            parts.append(f"{addr} daddr {daddr}")
        if proto:
            parts.append(f"meta l4proto {proto}")
        if dport is not None:
            parts.append(f"{proto} dport {int(dport)}")
        if orig_daddr:
            parts.append(f"ct original {addr} daddr {orig_daddr}")
        if orig_dport is not None:
            parts.append(f"ct original proto-dst {int(orig_dport)}")
        if match:
            parts.append(match)
        self.match = " ".join(parts)
        self.mark = int(mark)
        self.priority = int(priority)
        self.tag = f"obs{os.getpid()}_{next(_observer_ids)}"
        self.installed = False

    @property
    def _counters(self) -> tuple[str, str]:
        return f"{self.tag}_marked", f"{self.tag}_unmarked"

    def ruleset(self) -> str:
        """The nft script ``install`` loads (for reports and tests)."""
        t = f"{self.family} {OBSERVER_TABLE}"
        m, u = self._counters
        mk = f"{self.mark:#x}"
        return "\n".join([
            f"add table {t}",
            f"add counter {t} {m}",
            f"add counter {t} {u}",
            f"add chain {t} {self.tag} {{ type filter hook postrouting priority "
            f"{self.priority}; policy accept; }}",
            f'add rule {t} {self.tag} {self.match} meta mark & {mk} == {mk} counter name "{m}"',
            f'add rule {t} {self.tag} {self.match} meta mark & {mk} != {mk} counter name "{u}"',
        ]) + "\n"

    def install(self) -> MarkObserver:
        run_in_netns(self.netns, ["nft", "-f", "-"], input=self.ruleset())
        self.installed = True
        return self

    def read(self) -> tuple[int, int]:
        """(marked, unmarked) first packets of matching flows seen so far."""
        proc = run_in_netns(self.netns, ["nft", "-j", "list", "table", self.family,
                                         OBSERVER_TABLE])
        counts = {}
        for item in json.loads(proc.stdout).get("nftables", []):
            c = item.get("counter")
            if c and c.get("name") in self._counters:
                counts[c["name"]] = int(c.get("packets", 0))
        m, u = self._counters
        if m not in counts or u not in counts:
            raise NetfilterError(f"observer counters {m}/{u} missing in netns {self.netns}")
        return counts[m], counts[u]

    def remove(self) -> None:
        """Delete this observer's chain and counters, and the table once it is empty.
        Tolerates a namespace or table that is already gone."""
        if not self.installed:
            return
        t = f"{self.family} {OBSERVER_TABLE}"
        m, u = self._counters
        # The chain first: its rules reference the counters.
        script = f"delete chain {t} {self.tag}\ndelete counter {t} {m}\ndelete counter {t} {u}\n"
        run_in_netns(self.netns, ["nft", "-f", "-"], input=script, check=False)
        self.installed = False
        proc = run_in_netns(self.netns, ["nft", "-j", "list", "table", self.family,
                                         OBSERVER_TABLE], check=False)
        if proc.returncode == 0:
            items = json.loads(proc.stdout).get("nftables", [])
            if not any("chain" in i or "counter" in i for i in items):
                run_in_netns(self.netns, ["nft", "delete", "table", self.family, OBSERVER_TABLE],
                             check=False)

    def __enter__(self) -> MarkObserver:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def observer_rules(netns: str) -> Mapping[str, Any]:
    """The observer table of ``netns`` as nft JSON (empty if none), for failure reports."""
    proc = run_in_netns(netns, ["nft", "-j", "list", "table", "ip", OBSERVER_TABLE], check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout else {}
