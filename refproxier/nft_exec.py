"""Running ``nft`` for the reference proxier's nftables mode, and its daemon parts.

Everything the daemon loop (:mod:`refproxier.daemon`) needs to run kube-proxy's nftables mode
instead of its iptables mode, behind the daemon's own interfaces, so the daemon's sync
loop, retries, health checks and conntrack cleanup stay the same:

:class:`Nft`
    One family's ``kube-proxy`` table in the current network namespace: ``apply`` (one
    ``nft -f -`` transaction), ``table_exists``, ``existing`` (its chains and sets),
    ``delete_table``, ``list_table``.
:func:`daemon_parts(config) -> (ops, backend)`
    Drop-in replacements for ``netfilter_exec.Iptables`` (the daemon's ``NetfilterOps``)
    and ``backend.DefaultBackend``. The backend renders with
    :func:`refproxier.nftables.render_nft`, passing the last *successfully applied* proxy
    state as ``previous`` (so syncs update the table in place and affinity sets keep their
    entries). With no such state (the first sync, or after a failed ``nft -f``) and a
    table in place, it lists the table and renders kube-proxy's full sync over it (base
    chains re-created once, stale chains and affinity sets deleted); should that fail, the
    next sync replaces the whole table. A missing table (someone ran ``nft flush
    ruleset``: the analogue of a missing canary chain) is built anew.
:func:`nftables_config(config)`
    The config as nftables mode sees it (localhost NodePorts are never supported, so
    the daemon must not set route_localnet for them).
:func:`cleanup(config) -> int`
    Delete the ``kube-proxy`` table (exit status 0, or 1 on failure).

Hook-up in ``refproxier.runner``'s ``run``/``cleanup`` (when ``config.proxy_mode == "nftables"``)::

    config = nft_exec.nftables_config(config)
    ops, backend = nft_exec.daemon_parts(config)
    daemon = Daemon(config, state_dir, ipt=ops, backend=backend, refresh_config=refresh)
    ...
    return nft_exec.cleanup(config)          # in cleanup()
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from refproxier.backend import DefaultBackend
from refproxier.config import ProxierConfig
from refproxier.netfilter_exec import RestoreResult
from refproxier.nftables import (
    CLUSTER_IPS,
    TABLE,
    ExistingTable,
    cleanup_script,
    render_nft,
    split_replace_script,
)

log = logging.getLogger("refproxier.nft")

_TIMEOUT = 120.0
# nft reports errors as "/dev/stdin:12:5-9: Error: ..."
_NFT_LINE = re.compile(r"^[^:\n]*:(\d+):\d+(?:-\d+)?: Error", re.MULTILINE)


def failing_line(stderr: str, script: str) -> tuple[int | None, str | None]:
    """The script line nft blamed first, with its text, or (None, None)."""
    m = _NFT_LINE.search(stderr)
    if not m:
        return None, None
    n = int(m.group(1))
    lines = script.splitlines()
    return n, (lines[n - 1] if 1 <= n <= len(lines) else None)


class Nft:
    """The ``kube-proxy`` table of one family in the current network namespace."""

    def __init__(self, family: int, binary: str = "nft") -> None:
        self.family = family
        self.binary = binary
        self.nft_family = "ip6" if family == 6 else "ip"

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args], input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )

    def apply(self, script: str) -> RestoreResult:
        """Run ``script`` as one atomic transaction (``nft -f -``).

        A script that replaces the whole table is committed in parts when the table does
        not exist yet (:func:`refproxier.nftables.split_replace_script`): first the empty
        table with its chains and sets, then the per-service rules a few thousand
        Services at a time, then the base chains' rules and the maps' elements. Nothing is
        replaced then and no packet sees a half-built table; it is much cheaper for the
        kernel at 10,000 Services. A failed part leaves an inert table (no base chain
        jumps anywhere) and the daemon's retry replaces it in one transaction. If the table exists (``nft list tables``; should it
        appear in between, the skeleton's ``create table`` fails without changing
        anything), the script runs as one transaction, replacing the table atomically."""
        if not script:
            return RestoreResult(True, 0, "")
        parts = split_replace_script(script)
        if parts is not None and not self.table_exists():
            (skeleton, _), *rest = parts
            first = self._nft_f(skeleton)
            if isinstance(first, subprocess.CompletedProcess) and first.returncode == 0:
                res = RestoreResult(True, 0, "")
                for text, offset in rest:
                    res = self._result(self._nft_f(text), text, offset)
                    if not res.ok:
                        break
                return res
        return self._result(self._nft_f(script), script, 0)

    def _nft_f(self, script: str) -> subprocess.CompletedProcess[str] | RestoreResult:
        try:
            return self._run(["-f", "-"], script)
        except (OSError, subprocess.TimeoutExpired) as e:
            return RestoreResult(False, -1, f"{self.binary}: {e}")

    @staticmethod
    def _result(p: subprocess.CompletedProcess[str] | RestoreResult, script: str, offset: int) -> RestoreResult:
        if isinstance(p, RestoreResult):
            return p
        if p.returncode == 0:
            return RestoreResult(True, 0, p.stderr)
        n, text = failing_line(p.stderr, script)
        return RestoreResult(False, p.returncode, p.stderr, None if n is None else n + offset, text)

    def table_exists(self) -> bool:
        """Whether this family's ``kube-proxy`` table is there: asked by listing its
        ``cluster-ips`` set, which every ruleset of ours has. nft 1.0.6 fills its cache
        with every rule of the table for ``list tables`` and ``list table`` (13-15 s at
        10,000 Services x 10, where the daemon asks every second); listing one named set
        takes 0.04 s there."""
        try:
            p = self._run(["list", "set", self.nft_family, TABLE, CLUSTER_IPS])
        except (OSError, subprocess.TimeoutExpired):
            return False
        return p.returncode == 0

    def existing(self) -> ExistingTable | None:
        """The table's chains and named sets, listed (``nft -j``: chains, then sets without
        their elements; about 1 s at 10,000 Services), or None if there is no table or it
        cannot be listed."""
        if not self.table_exists():
            return None
        try:
            chains = self._run(["-j", "list", "chains", self.nft_family])
            sets = self._run(["-j", "-t", "list", "sets", self.nft_family])
        except (OSError, subprocess.TimeoutExpired):
            return None
        if chains.returncode != 0 or sets.returncode != 0:
            return None
        try:
            return ExistingTable(
                frozenset(o["chain"]["name"] for o in self._objects(chains.stdout, "chain")),
                {o["set"]["name"]: (str(o["set"].get("type")), o["set"].get("timeout"))
                 for o in self._objects(sets.stdout, "set")},
            )
        except (ValueError, KeyError, TypeError) as e:
            log.warning("cannot read nft's listing of the %s table: %s", TABLE, e)
            return None

    @staticmethod
    def _objects(text: str, kind: str) -> list[dict[str, Any]]:
        """This table's objects of one kind from ``nft -j list ...`` output."""
        return [o for o in json.loads(text)["nftables"] if kind in o and o[kind].get("table") == TABLE]

    def list_table(self) -> str:
        p = self._run(["list", "table", self.nft_family, TABLE])
        return p.stdout if p.returncode == 0 else ""

    def delete_table(self) -> RestoreResult:
        return self.apply(cleanup_script(self.family))


@dataclass
class _Applied:
    """What the kernel's table reflects: the last applied proxy state (None: unknown).

    With an unknown state the next sync is kube-proxy's: a full sync in place over the
    listed table (``listed``), or a new table when there is none. Should that sync fail,
    the one after replaces the whole table (``replace_next``): the one sync that cannot
    depend on what the table holds. The two alternate until one succeeds."""

    state: Any = None
    pending: Any = None
    listed: bool = False  # the pending sync renders over a listed table
    replace_next: bool = False


class NftOps:
    """The daemon's ``NetfilterOps`` for nftables. There are no built-in chains to jump
    from and no canary chains: the table's presence plays the canary's part."""

    flavour = "nftables"

    def __init__(self, nft: Nft, applied: _Applied) -> None:
        self.nft = nft
        self.family = nft.family
        self._applied = applied

    def restore(self, text: str) -> RestoreResult:
        res = self.nft.apply(text)
        # On failure the transaction changed nothing, but the daemon retries with a full
        # sync, from a listing or (after a failed one) replacing the table.
        a = self._applied
        a.state = a.pending if res.ok else None
        a.replace_next = not res.ok and a.listed
        return res

    def chains(self, table: str) -> frozenset[str]:
        return frozenset()

    def chain_exists(self, table: str, chain: str) -> bool:
        # The daemon asks for its canary in the first canary table (mangle); in nftables
        # mode the canary is the kube-proxy table itself, asked once per round.
        if table != "mangle" or self.nft.table_exists():
            return True
        self._applied.state = None
        return False

    def ensure_chain(self, table: str, chain: str) -> None:
        return None

    def ensure_rule_prepended(self, table: str, chain: str, args: list[str]) -> bool:
        return False


class NftBackend(DefaultBackend):
    """``backend.DefaultBackend`` rendering nft scripts instead of iptables-restore input."""

    def __init__(self, applied: _Applied, nft: Nft) -> None:
        super().__init__()
        self._applied = applied
        self._nft = nft

    def render(
        self, proxy_state: Any, config: ProxierConfig, *, changed: set[str] | None,
        existing_nat_chains: frozenset[str] = frozenset(),
    ) -> str:
        a = self._applied
        a.pending = proxy_state
        existing = None
        if a.state is None and not a.replace_next:
            existing = self._nft.existing()
        a.listed = existing is not None
        return render_nft(proxy_state, config, changed=changed, previous=a.state, memo=self._memo,
                          existing=existing)

    def jump_rules(self, config: ProxierConfig) -> list[tuple[str, str, list[str]]]:
        return []


def nftables_config(config: ProxierConfig) -> ProxierConfig:
    return dataclasses.replace(config, localhost_nodeports=False, proxy_mode="nftables")


def daemon_parts(config: ProxierConfig, binary: str = "nft") -> tuple[NftOps, NftBackend]:
    applied = _Applied()
    nft = Nft(config.ip_family, binary)
    return NftOps(nft, applied), NftBackend(applied, nft)


def cleanup(config: ProxierConfig, binary: str = "nft") -> int:
    res = Nft(config.ip_family, binary).delete_table()
    if res.ok:
        log.info("cleanup: removed the %s %s table", "ip6" if config.ip_family == 6 else "ip", TABLE)
        return 0
    log.error("cleanup failed: %s", res.describe())
    return 1
