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

API: :func:`run` (the daemon; exit status) and :func:`cleanup` (remove kube-proxy's rules),
both called by ``refproxier.cli``; :class:`Daemon` (the loop, with injectable side effects),
:class:`DefaultBackend` (how proxystate/iptables are driven), :func:`in_root_netns`.
Helpers: :mod:`refproxier.netfilter_exec` (iptables binaries), :mod:`refproxier.conntrack`
(UDP cleanup), :mod:`refproxier.healthcheck` (health check node port servers).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from refproxier import netfilter_exec
from refproxier.config import ProxierConfig
from refproxier.conntrack import UdpServicePort, clean_stale_entries
from refproxier.healthcheck import HealthCheckServers, HealthCheckTarget
from refproxier.netfilter_exec import CANARY_CHAIN, Iptables
from servicemodel import statedir

if TYPE_CHECKING:
    from refproxier.proxystate import ProxyState
    from servicemodel.cluster import ClusterState

log = logging.getLogger("refproxier.daemon")

POLL_INTERVAL = 0.05  # how often state.yaml is stat()ed
CANARY_INTERVAL = 1.0  # kube-proxy's Monitor checks the canaries about this often
RETRY_BACKOFF_MIN = 0.5  # first retry after a failed restore
RETRY_BACKOFF_MAX = 30.0



# --------------------------------------------------------------------------------------
# The pure parts the daemon drives (refproxier.proxystate / refproxier.iptables), behind one
# small interface so that the mechanics can be tested with stand-ins.


@dataclass
class LoadedState:
    """One generation of the state directory."""

    generation: int | None
    cluster: ClusterState


def needs_chain_cleanup(total_endpoints: int, last_cleanup: float | None, now: float,
                        sync_period: float) -> bool:
    """Whether this sync lists the nat table (``iptables-save``) to delete stale service
    chains. As kube-proxy: every sync, except in large-cluster mode (more than 1,000
    endpoints), where listing takes seconds and is done once per sync period; stale chains
    are unreferenced meanwhile, so they cost only memory."""
    from refproxier.iptables import LARGE_CLUSTER_ENDPOINTS_THRESHOLD

    if total_endpoints <= LARGE_CLUSTER_ENDPOINTS_THRESHOLD or last_cleanup is None:
        return True
    return now - last_cleanup > sync_period


class StateLoadError(Exception):
    pass


class Backend(Protocol):
    def load(self, state_dir: str) -> LoadedState: ...
    def build(self, cluster: Any, config: ProxierConfig) -> Any: ...
    def changed(self, old: Any | None, new: Any) -> set[str] | None: ...
    def render(
        self, proxy_state: Any, config: ProxierConfig, *, changed: set[str] | None,
        existing_nat_chains: frozenset[str],
    ) -> str: ...
    def jump_rules(self, config: ProxierConfig) -> list[tuple[str, str, list[str]]]: ...
    def problems(self, proxy_state: Any) -> list[str]: ...
    def udp_services(self, proxy_state: Any) -> set[str]: ...
    def udp_ports(self, proxy_state: Any) -> list[UdpServicePort]: ...
    def health_checks(self, proxy_state: Any) -> dict[int, HealthCheckTarget]: ...


class DefaultBackend:
    """The real pure parts: servicemodel + refproxier.proxystate + refproxier.iptables.
    Service keys are ``"namespace/name"`` strings (``ServicePortInfo.service_key``)."""

    def __init__(self) -> None:
        from refproxier.memo import PortMemo

        # Ports equal to the last sync's reuse their rules (refproxier.memo).
        self._memo: PortMemo = PortMemo()

    def load(self, state_dir: str) -> LoadedState:
        from servicemodel.cluster import ClusterState
        from servicemodel.load import ModelError, load_text

        path = statedir.state_path(state_dir)
        try:
            text = path.read_text()
        except OSError as e:
            raise StateLoadError(f"cannot read {path}: {e.strerror or e}") from None
        try:
            # Parse the text we read (not the path again): the file may be replaced at any
            # moment, and the generation must belong to these very objects.
            objs = load_text(text, source=str(path))
            generation = statedir.read_generation(text)
        except (ModelError, ValueError, TypeError) as e:
            raise StateLoadError(str(e)) from None
        except Exception as e:  # yaml.YAMLError and whatever a malformed object raises
            raise StateLoadError(f"{path}: {type(e).__name__}: {e}") from None
        return LoadedState(generation, ClusterState.from_objects(objs, generation=generation))

    def build(self, cluster: ClusterState, config: ProxierConfig) -> ProxyState:
        from refproxier.proxystate import build_proxy_state

        return build_proxy_state(cluster, config)

    def changed(self, old: ProxyState | None, new: ProxyState) -> set[str] | None:
        # kube-proxy decides on the derived service/endpoint info, not on raw objects: an
        # edit that changes nothing a rule depends on (a label, a resourceVersion) is no
        # change.
        from refproxier.proxystate import changed_services

        return changed_services(old, new)

    def render(
        self, proxy_state: ProxyState, config: ProxierConfig, *, changed: set[str] | None,
        existing_nat_chains: frozenset[str],
    ) -> str:
        from refproxier import iptables

        return iptables.render(
            proxy_state, config, changed=changed, existing_nat_chains=existing_nat_chains, memo=self._memo
        )

    def jump_rules(self, config: ProxierConfig) -> list[tuple[str, str, list[str]]]:
        from refproxier import iptables

        return [_jump_rule_tuple(j) for j in iptables.jump_rules(config)]

    def problems(self, proxy_state: ProxyState) -> list[str]:
        return [str(p) for p in proxy_state.problems]

    def udp_services(self, proxy_state: ProxyState) -> set[str]:
        return {sp.service_key for sp in proxy_state.service_ports if sp.protocol == "UDP"}

    def udp_ports(self, proxy_state: ProxyState) -> list[UdpServicePort]:
        return [
            UdpServicePort(
                sp.port_name_string, tuple(sp.destination_ips), sp.port, sp.node_port,
                frozenset(sp.serving_endpoint_ips), frozenset(sp.serving_endpoints),
            )
            for sp in proxy_state.udp_service_ports()
        ]

    def health_checks(self, proxy_state: ProxyState) -> dict[int, HealthCheckTarget]:
        return {
            hc.node_port: HealthCheckTarget(hc.namespace, hc.name, hc.local_endpoints)
            for hc in proxy_state.health_checks()
        }


def _jump_rule_tuple(j: Any) -> tuple[str, str, list[str]]:
    """(table, built-in chain, args) from a ``refproxier.iptables.JumpRule``."""
    return str(j.table), str(j.chain), [str(a) for a in j.args]


# --------------------------------------------------------------------------------------
# The daemon


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
    ) -> None:
        self.config = config
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

    def check_canaries(self) -> None:
        """kube-proxy's Monitor: if a canary chain is gone, the tables were flushed by
        someone else; the only safe answer is a full resync."""
        if self.syncs == 0:
            return  # nothing installed yet
        for table in ("mangle", "nat", "filter"):
            if not self.ipt.chain_exists(table, CANARY_CHAIN):
                log.warning("canary chain %s missing from table %s: rules were flushed, full resync",
                            CANARY_CHAIN, table)
                self.need_full_sync = True
                self.sync_pending = True
                return

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

        for table in ("mangle", "nat", "filter"):
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


# --------------------------------------------------------------------------------------
# Process set-up


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def in_root_netns() -> bool:
    """True if this process is (or may be) in the host's network namespace.

    The host's namespace is PID 1's; where PID 1 cannot be inspected (sandboxes deny it),
    kthreadd's (PID 2), since kernel threads always live in the initial namespace. If neither
    is readable, a namespace named under /run/netns (``ip netns exec``) counts as not the
    host's; anything else is treated as the host's, to be safe.
    """
    me = _ns_id("/proc/self/ns/net")
    if me is None:
        return True
    init = _ns_id("/proc/1/ns/net")
    if init is None and _is_kthreadd(2):
        init = _ns_id("/proc/2/ns/net")
    if init is not None:
        return me == init
    return me not in _named_netns_ids()


def _is_kthreadd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "kthreadd"
    except OSError:
        return False


def _named_netns_ids() -> list[tuple[int, int] | None]:
    try:
        return [_ns_id(str(p)) for p in Path("/run/netns").iterdir()]
    except OSError:
        return []


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    if _read_sysctl(name) == value:
        return
    Path("/proc/sys", name.replace(".", "/")).write_text(value)
    log.info("sysctl %s=%s", name, value)


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def set_sysctls(config: ProxierConfig) -> ProxierConfig:
    """The sysctls kube-proxy sets, written in this (node) namespace only. Returns the config
    with ``conntrack_tcp_be_liberal`` as read from the kernel."""
    if config.ip_family == 4 and config.localhost_nodeports:
        _write_sysctl("net.ipv4.conf.all.route_localnet", "1")
    # br_netfilter's sysctls are per network namespace only since Linux 5.3; before that,
    # writing one would change the host's, which we must never do.
    if _read_sysctl("net.bridge.bridge-nf-call-iptables") is not None:
        if _kernel_at_least(5, 3):
            _write_sysctl("net.bridge.bridge-nf-call-iptables", "1")
        else:
            log.warning("not setting net.bridge.bridge-nf-call-iptables: global before Linux 5.3")
    # kube-proxy omits the INVALID drop rule when the kernel is liberal; the config flag
    # (--conntrack-tcp-be-liberal) can only add that assumption, never take it away.
    liberal = _read_sysctl("net.netfilter.nf_conntrack_tcp_be_liberal")
    if liberal not in (None, "", "0") and not config.conntrack_tcp_be_liberal:
        log.info("net.netfilter.nf_conntrack_tcp_be_liberal=%s: no INVALID drop rule", liberal)
        config = dataclasses.replace(config, conntrack_tcp_be_liberal=True)
    return config


def local_addresses(family: int) -> tuple[str, ...]:
    """Addresses of this namespace's interfaces (kube-proxy reads them for
    --nodeport-addresses)."""
    p = subprocess.run(["ip", "-j", f"-{family}", "addr", "show"], capture_output=True,
                       text=True, timeout=10, check=False)
    if p.returncode != 0:
        return ()
    try:
        links = json.loads(p.stdout or "[]")
    except ValueError:
        return ()
    return tuple(a["local"] for ln in links for a in ln.get("addr_info", []) if "local" in a)


def _refresh_local_addresses(config: ProxierConfig) -> ProxierConfig:
    addrs = local_addresses(config.ip_family)
    if addrs and addrs != config.local_addresses:
        return dataclasses.replace(config, local_addresses=addrs)
    return config


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        t = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{t}.{int(record.msecs):03d}Z"


def _setup_logging(hostname: str) -> None:
    logger = logging.getLogger("refproxier")
    if logger.handlers or logging.getLogger().handlers:
        return  # the caller configured logging
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(_UTCFormatter(f"%(asctime)s refproxier[{hostname}] %(levelname)s %(message)s"))
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _resolve_flavour(config: ProxierConfig) -> str:
    if config.iptables_mode in ("legacy", "nft"):
        return config.iptables_mode
    return netfilter_exec.detect_flavour(config.ip_family)


def _refuse_root_netns() -> bool:
    if in_root_netns():
        print("refproxier: refusing to run in the root network namespace; start it inside a "
              "node namespace (ip netns exec <ns> ...)", file=sys.stderr)
        return True
    return False


def _make_daemon(config: ProxierConfig, state_dir: str, **kw: Any) -> tuple[Daemon, str]:
    """One family's Daemon with its real netfilter parts; returns it and the flavour."""
    backend: Backend | None = None
    ipt: NetfilterOps
    if config.proxy_mode == "nftables":
        # Same loop, other applier: refproxier.nft_exec (imported here: it imports us).
        from refproxier import nft_exec

        config = nft_exec.nftables_config(config)
        flavour = "nftables"
        ipt, backend = nft_exec.daemon_parts(config)
    else:
        flavour = _resolve_flavour(config)
        ipt = Iptables(flavour, config.ip_family)
    try:
        config = set_sysctls(config)
    except OSError as e:
        log.error("setting sysctls failed: %s", e)
    refresh = _refresh_local_addresses if config.nodeport_addresses else None
    if refresh is not None:
        config = refresh(config)
    return Daemon(config, state_dir, ipt=ipt, backend=backend, refresh_config=refresh,
                  **kw), flavour


def _api_source(kubeconfig: str | None, hostname: str) -> Any:
    """The API watcher for ``--kubeconfig`` (None without one), started."""
    if not kubeconfig:
        return None
    from refproxier.apiwatch import ApiSource

    source = ApiSource(kubeconfig, hostname)
    try:
        source.start()
    except Exception as e:  # lightkube's ConfigError, an unreadable file, bad YAML
        raise KubeconfigError(f"--kubeconfig {kubeconfig}: {e}") from None
    return source


class KubeconfigError(Exception):
    """A --kubeconfig that cannot be used; the message names it."""


def _start_source(kubeconfig: str | None, hostname: str) -> tuple[Any, bool]:
    """(source, ok): ok is False after printing why the kubeconfig cannot be used."""
    try:
        return _api_source(kubeconfig, hostname), True
    except KubeconfigError as e:
        print(f"refproxier: error: {e}", file=sys.stderr)
        return None, False


@contextmanager
def _stopped_by_signal(daemons: list[Daemon], source: Any) -> Iterator[None]:
    """SIGTERM/SIGINT stop every daemon's loop while the body runs; on leaving, the daemons
    are closed, the API source is stopped and the previous handlers are restored."""

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received, stopping (rules are left in place)", signal.Signals(signum).name)
        for d in daemons:
            d.stop_event.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for d in daemons:
            d.close()
        if source is not None:
            source.stop()
        for s, h in old.items():
            signal.signal(s, h)
    log.info("stopped")


def run(config: ProxierConfig, state_dir: str, kubeconfig: str | None = None) -> int:
    """Run the proxier until SIGTERM/SIGINT; returns the exit status (0, or 2 on refusal).
    With ``kubeconfig`` the state comes from that API (``state_dir`` only gets the acks)."""
    _setup_logging(config.hostname)
    if _refuse_root_netns():
        return 2
    source, ok = _start_source(kubeconfig, config.hostname)
    if not ok:
        return 2
    daemon, flavour = _make_daemon(config, state_dir, source=source)
    config = daemon.config

    with _stopped_by_signal([daemon], source):
        log.info("started: node %s, iptables %s (IPv%d), state dir %s, sync period %ss, min %ss",
                 config.hostname, flavour, config.ip_family, state_dir, config.sync_period,
                 config.min_sync_period)
        daemon.run_forever()
    return 0


class _NoHealthChecks(HealthCheckServers):
    """The secondary family's: the primary's servers listen on both families already."""

    def sync(self, wanted: Any) -> list[str]:  # type: ignore[override]
        return []


class _SerializedLoads:
    """A backend whose ``load`` runs under a lock shared by the families' loops: lightkube
    (msgspec) resolves its models' annotations lazily on first use, which is not
    thread-safe (seen: a segfault when both loops parsed the first state at once)."""

    def __init__(self, inner: Backend, lock: threading.Lock) -> None:
        self._inner = inner
        self._lock = lock

    def load(self, state_dir: str) -> LoadedState:
        with self._lock:
            return self._inner.load(state_dir)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _BothFamiliesAck:
    """``write_applied`` for a dual-stack process: ``applied/<node>`` is written only when
    every family's loop has applied the generation (the lowest of them is written)."""

    def __init__(self, families: Iterable[int]) -> None:
        self.lock = threading.Lock()
        self.generations: dict[int, int | None] = dict.fromkeys(families)

    def for_family(self, family: int) -> Callable[[str, str, int], None]:
        def write(state_dir: str, node: str, generation: int) -> None:
            with self.lock:
                self.generations[family] = generation
                gens = list(self.generations.values())
                if all(g is not None for g in gens):
                    statedir.write_applied(state_dir, node, min(gens))  # type: ignore[type-var]
        return write


def run_dual_stack(configs: list[ProxierConfig], state_dir: str, kubeconfig: str | None = None) -> int:
    """Run one sync loop per family (``configs``, primary first) in one process, as
    kube-proxy does on a dual-stack node: each family's loop uses the ClusterIPs and
    EndpointSlices of its family and its own table (iptables/ip6tables, or the ip/ip6
    nftables table). ``applied/<node>`` is written when all families have applied a
    generation. Health check node ports are served once, on both families."""
    _setup_logging(configs[0].hostname)
    if _refuse_root_netns():
        return 2
    ack = _BothFamiliesAck(c.ip_family for c in configs)
    load_lock = threading.Lock()
    source, ok = _start_source(kubeconfig, configs[0].hostname)  # one watcher for both families
    if not ok:
        return 2
    daemons: list[Daemon] = []
    for k, config in enumerate(configs):
        hc = HealthCheckServers(6) if k == 0 else _NoHealthChecks(config.ip_family)
        daemon, flavour = _make_daemon(config, state_dir, hc=hc,
                                       write_applied=ack.for_family(config.ip_family),
                                       source=source)
        daemon.backend = _SerializedLoads(daemon.backend, load_lock)  # type: ignore[assignment]
        daemons.append(daemon)
        log.info("started: node %s, iptables %s (IPv%d), state dir %s, sync period %ss, min %ss",
                 config.hostname, flavour, config.ip_family, state_dir, config.sync_period,
                 config.min_sync_period)

    with _stopped_by_signal(daemons, source):
        threads = [threading.Thread(target=d.run_forever, name=f"sync-ipv{d.config.ip_family}",
                                    daemon=True) for d in daemons]
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.2)  # short joins: signals are handled on this (main) thread
        finally:
            # The loops must be done before the daemons are closed.
            for d in daemons:
                d.stop_event.set()
            for t in threads:
                t.join()
    return 0


def cleanup(config: ProxierConfig) -> int:
    """Remove what kube-proxy installs (jump rules, KUBE-* chains in filter/nat/mangle) for
    the configured flavour (``auto``: every flavour holding such rules). Returns 0, or 1 if
    something could not be removed."""
    _setup_logging(config.hostname)
    if in_root_netns():
        print("refproxier: refusing to clean up the root network namespace", file=sys.stderr)
        return 2
    if config.proxy_mode == "nftables":
        from refproxier import nft_exec

        return nft_exec.cleanup(config)
    flavours = [config.iptables_mode] if config.iptables_mode in ("legacy", "nft") else ["legacy", "nft"]
    status = 0
    for flavour in flavours:
        ipt = Iptables(flavour, config.ip_family)
        try:
            saves = {t: ipt.save(t) for t in netfilter_exec.TABLES}
        except OSError as e:
            # auto: a flavour whose tools are not installed holds no rules of ours.
            log.log(logging.INFO if config.iptables_mode == "auto" else logging.ERROR,
                    "cleanup (%s): %s", flavour, e)
            status = status if config.iptables_mode == "auto" else 1
            continue
        text = netfilter_exec.cleanup_text(saves)
        if not text:
            continue
        res = ipt.restore(text, counters=False)
        if res.ok:
            log.info("cleanup: removed kube-proxy rules and chains (%s)", flavour)
        else:
            log.error("cleanup (%s) failed: %s", flavour, res.describe())
            status = 1
    return status

