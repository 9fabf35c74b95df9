"""The reference proxier's daemon: kube-proxy's iptables mode as a long-running process.

Started by the harness inside one node's network namespace (``ip netns exec``), it watches
the state directory (see :mod:`servicemodel.statedir`) and keeps the namespace's iptables
rules in step with the published Services and EndpointSlices, as kube-proxy's
``syncProxyRules`` does:

* a sync loads the state, builds the proxy state (:mod:`refproxier.proxystate`), renders
  iptables-restore input (:mod:`refproxier.iptables`) and applies it with
  ``iptables-restore -w --noflush --counters``; full syncs also ensure the jump rules from
  the built-in chains (``-C``, then ``-I chain 1``, as kube-proxy's EnsureRule);
* partial syncs rewrite the per-service chains only for services whose Service or
  EndpointSlices changed since the last applied state (MinimizeIPTablesRestore);
* syncs are rate-limited by ``min_sync_period``; a full sync runs an hour after the last
  one (kube-proxy's ``FullSyncPeriod``, ``config.full_sync_period``), after a failed restore
  (retried with backoff), and when a ``KUBE-PROXY-CANARY`` chain disappears (someone
  flushed the tables); ``sync_period`` only paces large clusters' stale-chain cleanup;
* after a sync that changed a UDP service, stale UDP conntrack entries are deleted;
* health check node port servers follow the services;
* after every successful sync the applied generation is written to ``applied/<node>``.

Bad input never removes working rules: an unreadable state is logged and ignored (the
current rules stay until the next generation), and problems in single objects are logged
while the rest is applied. On SIGTERM/SIGINT the daemon exits 0 and leaves its rules in
place, as kube-proxy does.

This module is the loop, :class:`Daemon`, with injectable side effects. Around it:
:mod:`refproxier.backend` (how proxystate/iptables are driven: ``DefaultBackend``),
:mod:`refproxier.runner` (the process: ``run``, ``run_dual_stack``, ``cleanup``, called by
``refproxier.cli``), :mod:`refproxier.nethost` (the node namespace: ``in_root_netns``,
sysctls, addresses), :mod:`refproxier.netfilter_exec` (iptables binaries),
:mod:`refproxier.conntrack` (UDP cleanup), :mod:`refproxier.healthcheck` (health check
node port servers).
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from refproxier import netfilter_exec
from refproxier.backend import Backend, DefaultBackend, LoadedState, StateLoadError
from refproxier.config import ProxierConfig
from refproxier.conntrack import UdpServicePort, clean_stale_entries
from refproxier.healthcheck import HealthCheckServers
from refproxier.iptables import CANARY_TABLES, LARGE_CLUSTER_ENDPOINTS_THRESHOLD
from refproxier.netfilter_exec import CANARY_CHAIN
from servicemodel import statedir

log = logging.getLogger("refproxier.daemon")

POLL_INTERVAL = 0.05  # how often state.yaml is stat()ed
# kube-proxy's Monitor checks every --iptables-sync-period (30 s); the reference checks
# more often so the suite's flush check does not wait half a minute (same outcome).
CANARY_INTERVAL = 1.0
RETRY_BACKOFF_MIN = 0.5  # first retry after a failed restore
RETRY_BACKOFF_MAX = 30.0


def needs_chain_cleanup(total_endpoints: int, last_cleanup: float | None, now: float,
                        sync_period: float) -> bool:
    """Whether this sync lists the nat table (``iptables-save``) to delete stale service
    chains. As kube-proxy: every sync, except in large-cluster mode (more than 1,000
    endpoints), where listing takes seconds and is done once per sync period; stale chains
    are unreferenced meanwhile, so they cost only memory."""
    if total_endpoints <= LARGE_CLUSTER_ENDPOINTS_THRESHOLD or last_cleanup is None:
        return True
    return now - last_cleanup > sync_period


class NetfilterOps(Protocol):
    """What the daemon needs from iptables (``netfilter_exec.Iptables`` implements it)."""

    flavour: str
    family: int

    def restore(self, text: str) -> netfilter_exec.RestoreResult: ...
    def chains(self, table: str) -> frozenset[str]: ...
    def chain_exists(self, table: str, chain: str) -> bool: ...
    def ensure_chain(self, table: str, chain: str) -> None: ...
    def ensure_rule_prepended(self, table: str, chain: str, args: list[str]) -> bool: ...


@dataclass
class _Applied:
    """What the rules in the kernel currently reflect."""

    generation: int | None = None
    proxy_state: Any = None
    udp_services: frozenset[str] = frozenset()
    problems: frozenset[str] = frozenset()


class Daemon:
    """The sync loop. All side effects go through ``ipt``, ``hc``, ``conntrack_clean``
    and ``write_applied``, so the logic runs in unit tests without root."""

    def __init__(
        self,
        config: ProxierConfig,
        state_dir: str,
        *,
        ipt: NetfilterOps,
        backend: Backend | None = None,
        hc: HealthCheckServers | None = None,
        conntrack_clean: Callable[[Iterable[UdpServicePort], int], Any] | None = None,
        write_applied: Callable[[str, str, int], None] = statedir.write_applied,
        clock: Callable[[], float] = time.monotonic,
        refresh_config: Callable[[ProxierConfig], ProxierConfig] | None = None,
        source: Any = None,
        health: Any = None,
    ) -> None:
        self.config = config
        # refproxier.proxyhealth.ProxyHealth (the /healthz and /livez answers), or None
        self.health = health
        # With --kubeconfig: a refproxier.apiwatch.ApiSource replaces state.yaml as input.
        self.source = source
        self._source_token = 0
        self.state_dir = str(state_dir)
        self.ipt = ipt
        self.backend = backend or DefaultBackend()
        self.hc = hc if hc is not None else HealthCheckServers(config.ip_family)
        self.conntrack_clean = conntrack_clean or (
            lambda ports, family: clean_stale_entries(ports, family)
        )
        self.write_applied = write_applied
        self.clock = clock
        self.refresh_config = refresh_config
        self.stop_event = threading.Event()

        self.loaded: LoadedState | None = None
        self.applied = _Applied()
        self.need_full_sync = True
        self.sync_pending = False
        self.last_sync_start: float | None = None
        self.last_full_sync: float | None = None
        self.last_chain_cleanup: float | None = None
        self.retry_at: float | None = None
        self.new_input = False  # a generation arrived since the last sync attempt
        self.backoff = RETRY_BACKOFF_MIN
        self.next_canary_check = 0.0
        self._file_key: tuple | None = None
        self.syncs = 0  # successful syncs, for tests and logs
        self.failed_syncs = 0

    # --- watching ----------------------------------------------------------------------

    def _stat_key(self) -> tuple | None:
        try:
            st = os.stat(statedir.state_path(self.state_dir))
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def poll_state(self) -> None:
        """Load state.yaml if it was replaced since the last look (or, with an API source,
        take its state if it changed)."""
        if self.source is not None:
            got = self.source.poll(self._source_token)
            if got is None:
                return
            self._source_token, loaded = got
        else:
            key = self._stat_key()
            if key is None or key == self._file_key:
                return
            self._file_key = key
            try:
                loaded = self.backend.load(self.state_dir)
            except StateLoadError as e:
                log.error("state not applied, keeping current rules until the next generation: %s", e)
                return
        if loaded.generation is None:
            log.warning("state has no metadata.resourceVersion; applying it without a generation")
        log.info("state generation %s read (%d services, %d endpoint slices)", loaded.generation,
                 len(loaded.cluster.services), len(loaded.cluster.endpoint_slices))
        self.loaded = loaded
        self.sync_pending = True
        self.new_input = True
        if self.health is not None:
            self.health.queued_update(self.config.ip_family)
            node = loaded.cluster.nodes.get(self.config.hostname)
            if node is not None:  # kube-proxy's SyncNode runs on Node events only
                self.health.sync_node(node)

    def check_canaries(self) -> None:
        """kube-proxy's Monitor: if the canary chain in mangle is gone, the tables were
        flushed by someone else (a firewall reload flushes them all, mangle first); the only
        safe answer is a full resync. Like kube-proxy, only the first table's canary is
        watched: a flush of nat alone goes unnoticed until the next full sync."""
        if self.syncs == 0:
            return  # nothing installed yet
        if not self.ipt.chain_exists(CANARY_TABLES[0], CANARY_CHAIN):
            log.warning("canary chain %s missing from table %s: rules were flushed, full resync",
                        CANARY_CHAIN, CANARY_TABLES[0])
            self.need_full_sync = True
            self.sync_pending = True

    # --- the loop ----------------------------------------------------------------------

    def due(self, now: float) -> bool:
        if self.loaded is None:
            return False
        if self.retry_at is not None:
            # A new generation is tried at once (it may be the fix), as kube-proxy's runner
            # runs on any change; otherwise wait for the backoff.
            if now < self.retry_at and not self.new_input:
                return False
        elif not self.sync_pending:
            if self._full_sync_age(now) < self.config.full_sync_period:
                return False
            # kube-proxy's runner wakes up hourly (maxInterval) and that sync is full.
            self.need_full_sync = True
        if self.last_sync_start is not None and now - self.last_sync_start < self.config.min_sync_period:
            return False
        return True

    def step(self) -> None:
        now = self.clock()
        self.poll_state()
        if now >= self.next_canary_check:
            self.next_canary_check = now + CANARY_INTERVAL
            self.check_canaries()
        if self.due(now):
            self.sync()

    def run_forever(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.step()
            except Exception:
                # e.g. an iptables call that timed out on the xtables lock: the daemon must
                # outlive it (the rules in place keep working); the next step retries.
                log.exception("unexpected error in the sync loop; continuing")
                self.need_full_sync = True
                self.sync_pending = self.loaded is not None
            self.stop_event.wait(POLL_INTERVAL)

    # --- one sync ----------------------------------------------------------------------

    def sync(self) -> bool:
        """Apply ``self.loaded``. Returns True on success."""
        loaded = self.loaded
        assert loaded is not None
        now = self.clock()
        self.last_sync_start = now
        self.sync_pending = False
        self.new_input = False
        # As kube-proxy's doFullSync: asked for, or the last full sync is an hour old.
        full = self.need_full_sync or self._full_sync_age(now) > self.config.full_sync_period
        t0 = time.monotonic()
        if self.refresh_config is not None and full:
            self.config = self.refresh_config(self.config)
        try:
            proxy_state = self.backend.build(loaded.cluster, self.config)
            # None: no previous state to compare with, every service counts as changed.
            changed = self.backend.changed(self.applied.proxy_state, proxy_state)
            problems = self.backend.problems(proxy_state)
        except Exception:
            # A bug or an input the model does not cover: say so, keep the current rules.
            log.exception("building the proxy state for generation %s failed; keeping current rules",
                          loaded.generation)
            self._failed(now)
            return False
        if changed is None:
            full = True
        for p in problems:
            if p not in self.applied.problems:
                log.warning("generation %s: %s", loaded.generation, p)
        try:
            if full:
                self._ensure_base()
            list_chains = needs_chain_cleanup(
                getattr(proxy_state, "total_endpoints", 0), self.last_chain_cleanup, now,
                self.config.sync_period)
            existing = self.ipt.chains("nat") if list_chains else frozenset()
            text = self.backend.render(
                proxy_state, self.config, changed=None if full else changed,
                existing_nat_chains=existing,
            )
        except Exception:
            log.exception("preparing the rules for generation %s failed", loaded.generation)
            self._failed(now)
            return False
        result = self.ipt.restore(text)
        if not result.ok:
            log.error("iptables-restore (%s) failed for generation %s: %s",
                      "full" if full else "partial", loaded.generation, result.describe())
            self._failed(now)
            return False

        # Rules are in. Follow up on what depends on them.
        new_udp = self._udp_services(proxy_state)
        if changed is None:
            udp_changed = bool(new_udp)
        else:
            udp_changed = bool((self.applied.udp_services | new_udp) & changed)
        self._sync_health_checks(proxy_state)
        if udp_changed:
            self._clean_conntrack(proxy_state, loaded.generation, self.applied.proxy_state)
        self.applied = _Applied(loaded.generation, proxy_state, new_udp, frozenset(problems))
        if list_chains:
            self.last_chain_cleanup = now
        self.need_full_sync = False
        self.retry_at = None
        self.backoff = RETRY_BACKOFF_MIN
        self.syncs += 1
        if self.health is not None:
            self.health.updated(self.config.ip_family)
        if full:
            self.last_full_sync = now
        if loaded.generation is not None:
            try:
                self.write_applied(self.state_dir, self.config.hostname, loaded.generation)
            except OSError as e:
                log.error("cannot write applied generation: %s", e)
        log.info("%s sync of generation %s done in %.0f ms (%s services changed, %d problems)",
                 "full" if full else "partial", loaded.generation,
                 (time.monotonic() - t0) * 1000,
                 "all" if changed is None else len(changed), len(problems))
        return True

    def _full_sync_age(self, now: float) -> float:
        last = self.last_full_sync if self.last_full_sync is not None else self.last_sync_start
        return float("inf") if last is None else now - last

    def _failed(self, now: float) -> None:
        # iptables-restore is atomic per table, so the last good rules are still there. The
        # next attempt rewrites everything, since we no longer know what the kernel holds.
        self.failed_syncs += 1
        self.need_full_sync = True
        self.sync_pending = True
        self.retry_at = now + self.backoff
        log.info("retrying in %.1f s with a full sync", self.backoff)
        self.backoff = min(self.backoff * 2, max(RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN))

    def _ensure_base(self) -> None:
        # One listing per table instead of one `-S` per chain: full syncs stay cheap.
        present = {t: set(self.ipt.chains(t)) for t in ("mangle", "nat", "filter")}

        def ensure_chain(table: str, chain: str) -> None:
            if chain not in present[table]:
                self.ipt.ensure_chain(table, chain)
                present[table].add(chain)

        for table in CANARY_TABLES:
            ensure_chain(table, CANARY_CHAIN)
        installed = []
        for table, chain, args in self.backend.jump_rules(self.config):
            target = _target_of(args)
            if target is not None:
                # EnsureRule needs the target to exist; kube-proxy EnsureChain()s it first.
                ensure_chain(table, target)
            if self.ipt.ensure_rule_prepended(table, chain, args):
                installed.append(f"{table}/{chain}->{target}")
                log.debug("jump rule installed: -t %s -I %s 1 %s", table, chain, shlex.join(args))
        if installed:
            # One line, not one per rule: after a flush all of them come back at once.
            log.info("jump rules installed (%d): %s", len(installed), ", ".join(installed))

    def _udp_services(self, proxy_state: Any) -> frozenset[str]:
        try:
            return frozenset(self.backend.udp_services(proxy_state))
        except Exception:
            log.exception("reading UDP services from the proxy state failed")
            return frozenset()

    def _sync_health_checks(self, proxy_state: Any) -> None:
        try:
            wanted = self.backend.health_checks(proxy_state)
        except Exception:
            log.exception("reading health check node ports from the proxy state failed")
            return
        for err in self.hc.sync(wanted):
            log.error("%s", err)

    def _clean_conntrack(self, proxy_state: Any, gen: int | None, previous: Any = None) -> None:
        try:
            ports = self.backend.udp_ports(proxy_state)
            if previous is not None:
                # A deleted UDP Service's flows are stale too (kubernetes#141371): its
                # ports are cleaned as if they had no endpoints left.
                kept = {(p.name, p.port) for p in ports}
                ports += [replace(p, serving_endpoint_ips=frozenset(), serving_endpoints=frozenset())
                          for p in self.backend.udp_ports(previous) if (p.name, p.port) not in kept]
            deleted = self.conntrack_clean(ports, self.config.ip_family)
        except Exception as e:
            log.error("UDP conntrack cleanup after generation %s failed: %s", gen, e)
            return
        for d in deleted or ():
            rport = getattr(d, "reply_sport", None)
            log.info("conntrack: deleted stale UDP entries to %s:%s with reply source %s%s",
                     getattr(d, "orig_dst", None) or "*", getattr(d, "orig_dport", "?"),
                     getattr(d, "reply_src", "?"), "" if rport is None else f" port {rport}")

    def close(self) -> None:
        self.hc.close_all()


def _target_of(args: list[str]) -> str | None:
    for i, a in enumerate(args[:-1]):
        if a in ("-j", "--jump"):
            t = args[i + 1]
            return t if t.startswith("KUBE-") else None
    return None
