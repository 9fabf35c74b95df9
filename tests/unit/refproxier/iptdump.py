"""Normalising iptables-restore text for comparison (as kube-proxy's sortIPTablesRules).

Counters, chain-declaration order and leading zeros of hex marks are ignored, rules are grouped by chain with their
order kept, and the chains whose rule order depends on Go map iteration (KUBE-SERVICES,
KUBE-NODEPORTS) are sorted stably by the service name in each rule's comment, keeping the
"must be the last rule" rule last.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass, field

_COUNTERS = re.compile(r"^\[\d+:\d+\]\s*")
# kube-proxy renders the mark with %#08x (0x004000) while its tests inject 0x4000.
_HEX = re.compile(r"\b0x0*([0-9a-f]+)\b")


@dataclass
class Table:
    name: str
    chains: dict[str, list[str]] = field(default_factory=dict)  # declared chain -> rules
    deleted: list[str] = field(default_factory=list)


def parse(text: str) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    cur: Table | None = None
    for raw in text.splitlines():
        line = _COUNTERS.sub("", raw.strip())
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], Table(line[1:]))
        elif line == "COMMIT":
            cur = None
        elif cur is None:
            raise ValueError(f"line outside a table: {raw!r}")
        elif line.startswith(":"):
            cur.chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chain = line.split()[1]
            if chain not in cur.chains:
                raise ValueError(f"rule for undeclared chain {chain}: {raw!r}")
            cur.chains[chain].append(_HEX.sub(r"0x\1", " ".join(line.split())))
        elif line.startswith("-X "):
            cur.deleted.append(line.split()[1])
        else:
            raise ValueError(f"unexpected line: {raw!r}")
    return tables


def _comment_service(rule: str) -> str:
    words = shlex.split(rule)
    if "--comment" in words:
        c = words[words.index("--comment") + 1]
        return re.split(r"[ :]", c, maxsplit=1)[0]
    return ""


def _chain_key(name: str) -> tuple[int, str]:
    if name == "KUBE-NODEPORTS":
        return (0, name)
    if name == "KUBE-SERVICES":
        return (1, name)
    return (2 if name.startswith("KUBE-") else 3, name)


def normalize(text: str) -> str:
    """A canonical rendering of restore text (dedented first, so tests can indent it)."""
    tables = parse(textwrap.dedent(text))
    out: list[str] = []
    for tname in sorted(tables):
        t = tables[tname]
        out.append(f"*{tname}")
        names = sorted(t.chains, key=_chain_key)
        out += [f":{n} - [0:0]" for n in names]
        for n in names:
            rules = t.chains[n]
            if n in ("KUBE-SERVICES", "KUBE-NODEPORTS"):
                rules = sorted(rules, key=lambda r: ("must be the last rule" in r, _comment_service(r)))
            out += rules
        out += [f"-X {c}" for c in sorted(t.deleted)]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def chain_rules(text: str, table: str, chain: str) -> list[str]:
    return parse(text)[table].chains.get(chain, [])
