"""Running the iptables binaries for the reference proxier's daemon.

One :class:`Iptables` object talks to one flavour (``legacy`` or ``nft``) of one family
(4 or 6) in the current network namespace. Every call passes ``-w`` because
iptables-restore takes the global ``/run/xtables.lock`` and the harness runs many proxiers
at once. Nothing here decides *what* rules to write; that is ``refproxier.iptables``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

TABLES = ("filter", "nat", "mangle")
CANARY_CHAIN = "KUBE-PROXY-CANARY"
# Chains whose presence tells which flavour a node's kube components use (the logic of
# kubernetes-sigs/iptables-wrappers, which kube-proxy's image runs before kube-proxy).
_HINT_CHAINS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
_LINE_RE = re.compile(r"line:?\s*(\d+)")
_TIMEOUT = 60.0


class IptablesError(RuntimeError):
    pass


@dataclass(frozen=True)
class RestoreResult:
    ok: bool
    returncode: int
    stderr: str
    failed_line_no: int | None = None
    failed_line: str | None = None

    def describe(self) -> str:
        """One line saying why the restore failed, quoting the failing input line."""
        msg = " ".join(self.stderr.split()) or f"exit status {self.returncode}"
        if self.failed_line_no is not None:
            msg += f" | input line {self.failed_line_no}: {self.failed_line!r}"
        return msg


def failing_line(stderr: str, restore_input: str) -> tuple[int | None, str | None]:
    """The input line that iptables-restore blamed ("Error occurred at line: N",
    "line N failed"), with its text, or (None, None)."""
    matches = _LINE_RE.findall(stderr)
    if not matches:
        return None, None
    n = int(matches[-1])
    lines = restore_input.splitlines()
    text = lines[n - 1] if 1 <= n <= len(lines) else None
    return n, text


def _binary(flavour: str, family: int, tool: str) -> str:
    base = "iptables" if family == 4 else "ip6tables"
    suffix = "" if tool == "" else f"-{tool}"
    # iptables-legacy, iptables-legacy-restore, iptables-nft-save, ip6tables-nft, ...
    return f"{base}-{flavour}{suffix}"


class Iptables:
    """The iptables tools of one flavour and family, in the current network namespace."""

    def __init__(self, flavour: str, family: int = 4) -> None:
        if flavour not in ("legacy", "nft"):
            raise ValueError(f"iptables flavour must be legacy or nft, not {flavour!r}")
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family!r}")
        self.flavour = flavour
        self.family = family
        self.iptables = _binary(flavour, family, "")
        self.restore_bin = _binary(flavour, family, "restore")
        self.save_bin = _binary(flavour, family, "save")

    def __repr__(self) -> str:
        return f"Iptables({self.flavour!r}, {self.family})"

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return self._run([self.iptables, "-w", *args])

    # --- restore / save -------------------------------------------------------------------

    def restore(self, text: str, *, noflush: bool = True, counters: bool = True) -> RestoreResult:
        argv = [self.restore_bin, "-w"]
        if noflush:
            argv.append("--noflush")
        if counters:
            argv.append("--counters")
        p = self._run(argv, stdin=text)
        if p.returncode == 0:
            return RestoreResult(True, 0, p.stderr)
        n, line = failing_line(p.stderr, text)
        return RestoreResult(False, p.returncode, p.stderr.strip(), n, line)

    def save(self, table: str) -> str:
        p = self._run([self.save_bin, "-t", table])
        if p.returncode != 0:
            # An absent table (nft: never created) is not an error for our callers.
            return ""
        return p.stdout

    def chains(self, table: str) -> frozenset[str]:
        """Names of all chains in ``table`` (built-in ones included)."""
        return frozenset(parse_save_chains(self.save(table)))

    def rule_count(self) -> int:
        """How many rules this flavour holds across filter/nat/mangle (for auto-detection)."""
        total = 0
        for table in TABLES:
            total += sum(1 for ln in self.save(table).splitlines() if ln.startswith("-A "))
        return total

    # --- single-rule operations (EnsureRule / EnsureChain) --------------------------------

    def chain_exists(self, table: str, chain: str) -> bool:
        return self.run("-t", table, "-S", chain).returncode == 0

    def ensure_chain(self, table: str, chain: str) -> None:
        if self.chain_exists(table, chain):
            return
        p = self.run("-t", table, "-N", chain)
        if p.returncode != 0 and not self.chain_exists(table, chain):
            raise IptablesError(f"{self.iptables} -t {table} -N {chain}: {p.stderr.strip()}")

    def ensure_rule_prepended(self, table: str, chain: str, args: Sequence[str]) -> bool:
        """kube-proxy's EnsureRule(Prepend): ``-C``, and ``-I chain 1`` if missing.
        Returns True if the rule was inserted."""
        if self.run("-t", table, "-C", chain, *args).returncode == 0:
            return False
        p = self.run("-t", table, "-I", chain, "1", *args)
        if p.returncode != 0:
            raise IptablesError(
                f"{self.iptables} -t {table} -I {chain} 1 {' '.join(args)}: {p.stderr.strip()}"
            )
        return True


def parse_save_chains(save_text: str) -> list[str]:
    return [ln[1:].split()[0] for ln in save_text.splitlines() if ln.startswith(":") and len(ln) > 1]


def detect_flavour(family: int = 4) -> str:
    """Which iptables flavour to use when asked for ``auto``, as kube-proxy's image decides
    (iptables-wrappers): the flavour holding kubelet's hint/canary chains in mangle, else the
    one holding more rules, defaulting to nft."""
    legacy, nft = Iptables("legacy", family), Iptables("nft", family)
    for ipt in (nft, legacy):
        try:
            mangle = ipt.chains("mangle")
        except (OSError, subprocess.SubprocessError):
            continue
        if any(c in mangle for c in _HINT_CHAINS):
            return ipt.flavour
    try:
        n_legacy = legacy.rule_count()
    except (OSError, subprocess.SubprocessError):
        return "nft"
    try:
        n_nft = nft.rule_count()
    except (OSError, subprocess.SubprocessError):
        return "legacy" if n_legacy else "nft"
    return "legacy" if n_legacy > n_nft else "nft"


def cleanup_text(save_by_table: dict[str, str]) -> str:
    """iptables-restore input (for ``--noflush``) that removes what kube-proxy installs:
    every rule of a built-in chain that jumps to a ``KUBE-*`` chain, then every ``KUBE-*``
    chain (declared, which flushes it, then ``-X``). Computed from the current rules, so
    things already gone are simply not mentioned."""
    out: list[str] = []
    for table, text in save_by_table.items():
        kube_chains = [c for c in parse_save_chains(text) if c.startswith("KUBE-")]
        builtin_jumps = []
        for ln in text.splitlines():
            if not ln.startswith("-A "):
                continue
            parts = ln.split()
            chain = parts[1]
            if chain.startswith("KUBE-"):
                continue
            target = _jump_target(parts)
            if target is not None and target.startswith("KUBE-"):
                builtin_jumps.append("-D " + ln[3:])
        if not kube_chains and not builtin_jumps:
            continue
        out.append(f"*{table}")
        out.extend(f":{c} - [0:0]" for c in kube_chains)
        out.extend(builtin_jumps)
        out.extend(f"-X {c}" for c in kube_chains)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def _jump_target(parts: list[str]) -> str | None:
    for i, p in enumerate(parts[:-1]):
        if p in ("-j", "--jump", "-g", "--goto"):
            return parts[i + 1]
    return None
