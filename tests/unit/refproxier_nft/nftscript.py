"""Reading ``nft -f`` scripts in tests: a normaliser, an applier and a packet tracer.

``normalize(text)``
    As kube-proxy's ``sortNFTablesTransaction``: object lines sorted, rules kept in order
    within their chain, hex marks without leading zeros, ``delete``/``flush`` lines and
    duplicates dropped (a full script declares the table twice). For full scripts only.
``Table.apply(text)``
    Apply a script (full or incremental) to an in-memory table with nft's semantics for
    the commands the renderer uses, failing where nft would (deleting what is missing,
    deleting a chain that is still referenced).
``trace(table, src, proto, dst, dport, node_ips)``
    What kube-proxy's test tracer (pkg/proxy/nftables/helpers_test.go ``tracePacket``)
    reports: filter-prerouting-pre-dnat, nat-prerouting (every numgen branch is followed, so all
    endpoints are listed), then filter-forward and filter-input; the result is
    ``"ip:port, ..."``, ``"DROP"``, ``"REJECT"`` or ``""``, and whether the packet was marked
    for masquerade.
"""

from __future__ import annotations

import ipaddress
import re
import textwrap
from dataclasses import dataclass, field

_HEX = re.compile(r"\b0x0*([0-9a-f]+)\b")
_WS = re.compile(r"\s+")
_COMMENT = re.compile(r'\s+comment\s+"[^"]*"')


def _clean(line: str) -> str:
    return _HEX.sub(r"0x\1", _WS.sub(" ", line.strip()))


def normalize(text: str) -> str:
    objects: set[str] = set()
    rules: dict[str, list[str]] = {}
    for raw in textwrap.dedent(text).splitlines():
        line = _clean(raw)
        if not line or line.startswith("#"):
            continue
        words = line.split(" ")
        if words[0] in ("delete", "flush"):
            continue
        if words[:2] == ["add", "rule"]:
            rules.setdefault(words[4], []).append(line)
        else:
            objects.add(line)
    order = {"table": 0, "chain": 1, "set": 2, "map": 3, "element": 5}
    out = sorted(objects, key=lambda s: (order.get(s.split(" ")[1], 9), s))
    head = [s for s in out if order.get(s.split(" ")[1], 9) < 4]
    tail = [s for s in out if s not in head]
    for chain in sorted(rules):
        head += rules[chain]
    return "\n".join(head + tail)


def chain_rules(text: str, chain: str) -> list[str]:
    """The rule bodies ``add rule <fam> kube-proxy <chain> ...`` of a script, in order."""
    out = []
    for raw in text.splitlines():
        w = _clean(raw).split(" ", 5)
        if w[:2] == ["add", "rule"] and w[4] == chain:
            out.append(w[5])
    return out


# --------------------------------------------------------------------------------------
# Applying scripts


class NftError(Exception):
    pass


_ELEM = re.compile(r"^\{ (?P<key>.*?)(?: comment \"[^\"]*\")?(?: : (?P<value>.*?))? \}$")


@dataclass
class Table:
    exists: bool = False
    chains: dict[str, list[str]] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)  # name -> declaration body
    elements: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def _refs(self, besides: str | None = None) -> set[str]:
        """Chains and sets referenced by rules (other than ``besides``'s) and elements."""
        refs: set[str] = set()
        for chain, rules in self.chains.items():
            if chain == besides:
                continue
            for r in rules:
                refs.update(re.findall(r"(?:goto|jump) (\S+)", r))
                refs.update(re.findall(r"@(\S+)", r))
        for els in self.elements.values():
            for v in els.values():
                if v:
                    refs.update(re.findall(r"(?:goto|jump) (\S+)", v))
        return refs

    def apply(self, text: str) -> None:
        for raw in text.splitlines():
            line = _clean(raw)
            if not line or line.startswith("#"):
                continue
            self._apply_line(line)

    def _apply_line(self, line: str) -> None:
        w = line.split(" ", 4)
        verb, kind = w[0], w[1]
        if kind == "table":
            if verb == "create" and self.exists:
                raise NftError(f"table exists: {line}")
            if verb in ("add", "create"):
                self.exists = True
            elif verb == "delete":
                if not self.exists:
                    raise NftError(f"no such table: {line}")
                self.__init__()  # type: ignore[misc]
            return
        if not self.exists:
            raise NftError(f"no such table: {line}")
        name, rest = w[4].split(" ", 1) if " " in w[4] else (w[4], "")
        if kind == "chain":
            if verb == "add":
                self.chains.setdefault(name, [])
            elif name not in self.chains:
                raise NftError(f"no such chain: {line}")
            elif verb == "flush":
                self.chains[name] = []
            elif verb == "delete":
                # As the kernel: the chain's own rules go with it; references block it.
                if name in self._refs(besides=name):
                    raise NftError(f"chain busy: {line}")
                del self.chains[name]
        elif kind in ("set", "map"):
            if verb == "add":
                self.containers.setdefault(name, rest)
                self.elements.setdefault(name, {})
            elif name not in self.containers:
                raise NftError(f"no such {kind}: {line}")
            elif verb == "flush":
                self.elements[name] = {}
            elif verb == "delete":
                if name in self._refs():
                    raise NftError(f"{kind} busy: {line}")
                del self.containers[name]
                del self.elements[name]
        elif kind == "rule":
            if name not in self.chains:
                raise NftError(f"no such chain: {line}")
            for ref in re.findall(r"(?:goto|jump) (\S+)", rest):
                if ref not in self.chains:
                    raise NftError(f"no such chain {ref}: {line}")
            for ref in re.findall(r"@(\S+)", rest):
                if ref not in self.containers:
                    raise NftError(f"no such set {ref}: {line}")
            self.chains[name].append(rest)
        elif kind == "element":
            if name not in self.containers:
                raise NftError(f"no such set/map: {line}")
            m = _ELEM.match(rest)
            if not m:
                raise NftError(f"cannot parse element: {line}")
            key, value = m.group("key"), m.group("value")
            els = self.elements[name]
            if verb == "add":
                if key in els and els[key] != value:
                    raise NftError(f"element exists with another value: {line}")
                if value:
                    target = value.split(" ", 1)[-1]
                    if value.startswith(("goto", "jump")) and target not in self.chains:
                        raise NftError(f"no such chain {target}: {line}")
                els[key] = value
            elif verb == "delete":
                if key not in els:
                    raise NftError(f"no such element: {line}")
                del els[key]
        else:
            raise NftError(f"unsupported: {line}")


def load(text: str) -> Table:
    t = Table()
    t.apply(text)
    return t


# --------------------------------------------------------------------------------------
# Tracing


def _in(ip: str, spec: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(spec, strict=False)


def _in_any(ip: str, specs: str) -> bool:
    return any(_in(ip, s.strip()) for s in specs.split(",") if s.strip())


@dataclass
class _Tracer:
    table: Table
    node_ips: list[str]
    src: str
    proto: str
    dst: str
    dport: str
    matches: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    masq: bool = False

    def _local(self, ip: str) -> bool:
        return ip in self.node_ips

    def _verdict(self, verdict: str) -> bool | None:
        """True: terminal; False: fell through (goto: return); None: continue."""
        v = verdict.split(" ")
        if v[0] in ("drop", "reject"):
            self.outputs = [v[0].upper()]
            return True
        if v[0] == "jump":
            return True if self.run(v[1]) else None
        if v[0] == "goto":
            return self.run(v[1])
        if v[0] == "return":
            return False
        raise AssertionError(f"unknown verdict {verdict!r}")

    def _lookup(self, container: str, key: str) -> bool | None:
        value = self.table.elements.get(container, {}).get(key)
        return None if value is None else self._verdict(value)

    def run(self, chain: str) -> bool:
        for rule in self.table.chains.get(chain, []):
            body = _COMMENT.sub("", rule)
            res = self._rule(body)
            if res is not None:
                self.matches.append(f"{chain}: {rule}")
                return res
        return False

    def _rule(self, r: str) -> bool | None:  # noqa: C901 - one branch per rule form
        ipx = r"ip6?"
        m = re.fullmatch(r"ct state new ((?:jump|goto) \S+)", r) or re.fullmatch(r"((?:jump|goto) \S+)", r)
        if m:
            return self._verdict(m.group(1))
        m = re.fullmatch(rf"{ipx} daddr \. meta l4proto \. th dport vmap @(\S+)", r)
        if m:
            return self._lookup(m.group(1), f"{self.dst} . {self.proto} . {self.dport}")
        m = re.fullmatch(rf"{ipx} daddr @(\S+) meta l4proto \. th dport vmap @(\S+)", r)
        if m:
            if self.dst in self.table.elements.get(m.group(1), {}):
                return self._lookup(m.group(2), f"{self.proto} . {self.dport}")
            return None
        m = re.fullmatch(r"(fib daddr type local )?ip6? daddr != (\S+) meta l4proto \. th dport vmap @(\S+)", r)
        if m:
            if (m.group(1) and not self._local(self.dst)) or _in(self.dst, m.group(2)):
                return None
            return self._lookup(m.group(3), f"{self.proto} . {self.dport}")
        m = re.fullmatch(rf"{ipx} daddr @(\S+) (reject|drop)", r)
        if m:
            return self._verdict(m.group(2)) if self.dst in self.table.elements.get(m.group(1), {}) else None
        m = re.fullmatch(rf"{ipx} daddr \{{ (.*) \}} (drop|reject)", r)
        if m:
            return self._verdict(m.group(2)) if _in_any(self.dst, m.group(1)) else None
        m = re.fullmatch(rf"{ipx} saddr != \{{ (.*) \}} (drop|reject)", r)
        if m:
            return None if _in_any(self.src, m.group(1)) else self._verdict(m.group(2))
        m = re.fullmatch(rf"{ipx} daddr (\S+) (\w+) dport (\d+)(?: {ipx} saddr (!= )?(\S+))? ((?:jump|goto) \S+)", r)
        if m:
            if self.dst != m.group(1) or self.proto != m.group(2) or self.dport != m.group(3):
                return None
            if m.group(5) and _in(self.src, m.group(5)) == bool(m.group(4)):
                return None
            return self._verdict(m.group(6))
        m = re.fullmatch(rf"{ipx} saddr @(\S+) ((?:jump|goto) \S+)", r)
        if m:
            # Affinity sets are empty in a trace: no earlier connection to stick to.
            return None
        m = re.fullmatch(rf"{ipx} saddr (!= )?(\S+) ((?:jump|goto) \S+)", r)
        if m:
            return self._verdict(m.group(3)) if _in(self.src, m.group(2)) != bool(m.group(1)) else None
        m = re.fullmatch(r"fib saddr type local ((?:jump|goto) \S+)", r)
        if m:
            return self._verdict(m.group(1)) if self._local(self.src) else None
        m = re.fullmatch(r"numgen random mod (\d+) vmap \{ (.*) \}", r)
        if m:
            for part in m.group(2).split(" , "):
                _, verdict = part.split(" : ")
                self._verdict(verdict)  # follow every branch to list all endpoints
            return True
        if re.fullmatch(rf"update @\S+ \{{ {ipx} saddr \}}", r):
            return None
        m = re.fullmatch(r"meta l4proto (\w+) dnat to (\S+)", r)
        if m:
            self.outputs.append(m.group(2))
            return True
        if re.fullmatch(r"mark set mark or \S+", r):
            self.masq = True
            return None
        if r in ("drop", "reject"):
            return self._verdict(r)
        raise AssertionError(f"tracer does not understand rule {r!r}")


def trace(
    table: Table, src: str, proto: str, dst: str, dport: int, node_ips: list[str]
) -> tuple[list[str], str, bool]:
    t = _Tracer(table, node_ips, src, proto, dst, str(dport))
    if t.run("filter-prerouting-pre-dnat"):
        return t.matches, ", ".join(t.outputs), t.masq
    t.run("nat-prerouting")
    if t.outputs:
        host = t.outputs[0].rsplit(":", 1)[0].strip("[]")
        t.dst = host
    if t.run("filter-forward"):
        return t.matches, ", ".join(t.outputs), t.masq
    t.run("filter-input")
    return t.matches, ", ".join(t.outputs), t.masq
