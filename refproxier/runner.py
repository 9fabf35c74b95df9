"""The daemon process: ``refproxier run`` and ``refproxier cleanup`` (called by
``refproxier.cli``).

:func:`run` starts one sync loop (:class:`refproxier.daemon.Daemon`) in this node's
namespace, with the iptables (``refproxier.netfilter_exec``) or nftables
(``refproxier.nft_exec``) parts, reading ``state.yaml`` or, with a kubeconfig, the API
(``refproxier.apiwatch``); :func:`run_dual_stack` one loop per family in one process;
:func:`cleanup` removes kube-proxy's rules. Each returns the exit status.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from refproxier import netfilter_exec, nft_exec
from refproxier.apiwatch import ApiSource
from refproxier.backend import Backend, LoadedState
from refproxier.config import ProxierConfig
from refproxier.daemon import Daemon, NetfilterOps
from refproxier.healthcheck import HealthCheckServers
from refproxier.netfilter_exec import Iptables
from refproxier.nethost import (
    in_root_netns,
    refresh_local_addresses,
    refuse_root_netns,
    set_sysctls,
    setup_logging,
)
from refproxier.proxyhealth import ProxyHealth, ProxyHealthServer
from servicemodel import statedir

log = logging.getLogger("refproxier.daemon")


def _resolve_flavour(config: ProxierConfig) -> str:
    if config.iptables_mode in ("legacy", "nft"):
        return config.iptables_mode
    return netfilter_exec.detect_flavour(config.ip_family)


def _make_daemon(config: ProxierConfig, state_dir: str, **kw: Any) -> tuple[Daemon, str]:
    """One family's Daemon with its real netfilter parts; returns it and the flavour."""
    backend: Backend | None = None
    ipt: NetfilterOps
    if config.proxy_mode == "nftables":
        # Same loop, other applier: refproxier.nft_exec.
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
    refresh = refresh_local_addresses if config.nodeport_addresses else None
    if refresh is not None:
        config = refresh(config)
    return Daemon(config, state_dir, ipt=ipt, backend=backend, refresh_config=refresh,
                  **kw), flavour


def _api_source(kubeconfig: str | None, hostname: str) -> Any:
    """The API watcher for ``--kubeconfig`` (None without one), started."""
    if not kubeconfig:
        return None
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
    setup_logging(config.hostname)
    if refuse_root_netns():
        return 2
    source, ok = _start_source(kubeconfig, config.hostname)
    if not ok:
        return 2
    platform_cleanup(config)
    health, server = _health_server(config)
    daemon, flavour = _make_daemon(config, state_dir, source=source, health=health)
    config = daemon.config

    with _stopped_by_signal([daemon], source), _closing(server):
        log.info("started: node %s, iptables %s (IPv%d), state dir %s, sync period %ss, min %ss",
                 config.hostname, flavour, config.ip_family, state_dir, config.sync_period,
                 config.min_sync_period)
        daemon.run_forever()
    return 0


def _health_server(config: ProxierConfig) -> tuple[ProxyHealth | None, ProxyHealthServer | None]:
    """kube-proxy's /healthz and /livez (timeout 2 x sync period, as its server.go), started;
    (None, None) when --healthz-bind-address is empty or the port cannot be bound (logged)."""
    if not config.healthz_bind_address:
        return None, None
    health = ProxyHealth(health_timeout=2 * config.sync_period)
    server = ProxyHealthServer(health, config.healthz_bind_address)
    try:
        server.start()
    except (OSError, ValueError) as e:
        log.error("health server on %s not started: %s", config.healthz_bind_address, e)
        return None, None
    return health, server


@contextmanager
def _closing(server: ProxyHealthServer | None) -> Iterator[None]:
    try:
        yield
    finally:
        if server is not None:
            server.close()


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


class BothFamiliesAck:
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
    setup_logging(configs[0].hostname)
    if refuse_root_netns():
        return 2
    ack = BothFamiliesAck(c.ip_family for c in configs)
    load_lock = threading.Lock()
    source, ok = _start_source(kubeconfig, configs[0].hostname)  # one watcher for both families
    if not ok:
        return 2
    daemons: list[Daemon] = []
    for config in configs:
        platform_cleanup(config)
    health, server = _health_server(configs[0])  # one server, fed by both families' loops
    for k, config in enumerate(configs):
        hc = HealthCheckServers(6) if k == 0 else _NoHealthChecks(config.ip_family)
        daemon, flavour = _make_daemon(config, state_dir, hc=hc,
                                       write_applied=ack.for_family(config.ip_family),
                                       source=source, health=health)
        daemon.backend = _SerializedLoads(daemon.backend, load_lock)  # type: ignore[assignment]
        daemons.append(daemon)
        log.info("started: node %s, iptables %s (IPv%d), state dir %s, sync period %ss, min %ss",
                 config.hostname, flavour, config.ip_family, state_dir, config.sync_period,
                 config.min_sync_period)

    with _stopped_by_signal(daemons, source), _closing(server):
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


def platform_cleanup(config: ProxierConfig) -> None:
    """As kube-proxy's ``platformCleanup`` at start (cmd/kube-proxy/app/server_linux.go):
    remove the rules of the mode not in use, so that a node switched between iptables and
    nftables keeps no stale translations (nftables mode: kube-proxy's iptables chains, in
    every flavour; iptables mode: its nftables table). A failure is logged, not fatal."""
    if config.proxy_mode == "nftables":
        _cleanup_iptables(config, ["legacy", "nft"], quiet=True)
        return
    try:
        nft = nft_exec.Nft(config.ip_family)
        if nft.list_table():
            res = nft.delete_table()
            if res.ok:
                log.info("removed the nftables-mode table left by an earlier run")
            else:
                log.warning("could not remove the nftables-mode table: %s", res.describe())
    except OSError as e:  # no nft: no table of ours either
        log.info("nftables-mode cleanup skipped: %s", e)


def _cleanup_iptables(config: ProxierConfig, flavours: list[str], quiet: bool) -> int:
    """Remove kube-proxy's iptables rules and chains in ``flavours``; 1 if one failed."""
    status = 0
    for flavour in flavours:
        ipt = Iptables(flavour, config.ip_family)
        try:
            saves = {t: ipt.save(t) for t in netfilter_exec.TABLES}
        except OSError as e:
            # a flavour whose tools are not installed holds no rules of ours
            log.log(logging.INFO if quiet else logging.ERROR, "cleanup (%s): %s", flavour, e)
            status = status if quiet else 1
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


def cleanup(config: ProxierConfig) -> int:
    """Remove what kube-proxy installs (jump rules, KUBE-* chains in filter/nat/mangle) for
    the configured flavour (``auto``: every flavour holding such rules). Returns 0, or 1 if
    something could not be removed."""
    setup_logging(config.hostname)
    if in_root_netns():
        print("refproxier: refusing to clean up the root network namespace", file=sys.stderr)
        return 2
    if config.proxy_mode == "nftables":
        return nft_exec.cleanup(config)
    flavours = [config.iptables_mode] if config.iptables_mode in ("legacy", "nft") else ["legacy", "nft"]
    return _cleanup_iptables(config, flavours, quiet=config.iptables_mode == "auto")
