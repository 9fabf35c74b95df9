"""The daemon's sync logic against stand-ins for iptables and for the pure parts: what is
synced when (full/partial, rate limits, retries, canaries), what is reported, and that bad
input never removes rules. No root needed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from refproxier.backend import DefaultBackend
from refproxier.config import ProxierConfig
from refproxier.conntrack import UdpServicePort
from refproxier.daemon import Daemon
from refproxier.netfilter_exec import CANARY_CHAIN, RestoreResult
from servicemodel.statedir import STATE_FILE, read_applied, write_state

from .builders import endpoint_slice, service

JUMPS = [("nat", "PREROUTING", ["-m", "comment", "--comment", "kubernetes service portals",
                                "-j", "KUBE-SERVICES"])]


@dataclass
class FakeIptables:
    flavour: str = "legacy"
    family: int = 4
    tables: dict[str, set[str]] = field(default_factory=lambda: {"filter": set(), "nat": set(), "mangle": set()})
    rules: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    restores: list[str] = field(default_factory=list)
    fail_next: int = 0

    def restore(self, text: str) -> RestoreResult:
        self.restores.append(text)
        if self.fail_next:
            self.fail_next -= 1
            return RestoreResult(False, 1, "iptables-restore: line 2 failed", 2, text.splitlines()[1])
        return RestoreResult(True, 0, "")

    def chains(self, table: str) -> frozenset[str]:
        return frozenset(self.tables[table])

    def chain_exists(self, table: str, chain: str) -> bool:
        return chain in self.tables[table]

    def ensure_chain(self, table: str, chain: str) -> None:
        self.tables[table].add(chain)

    def ensure_rule_prepended(self, table: str, chain: str, args: list[str]) -> bool:
        r = (table, chain, tuple(args))
        if r in self.rules:
            return False
        self.rules.insert(0, r)
        return True


class StandInBackend(DefaultBackend):
    """Real loading (servicemodel); stand-ins for build/render that expose what was asked."""

    def __init__(self) -> None:
        self.renders: list[dict] = []
        self.problem_list: list[str] = []
        self.fail_build = False

    def build(self, cluster, config):
        if self.fail_build:
            raise RuntimeError("stand-in build failure")
        return cluster

    def render(self, proxy_state, config, *, changed, existing_nat_chains):
        self.renders.append({"changed": changed, "existing": existing_nat_chains,
                             "services": sorted(proxy_state.services)})
        return "*nat\n-A KUBE-SERVICES -j ACCEPT\nCOMMIT\n"

    def changed(self, old, new):
        if old is None:
            return None

        def by_service(c):
            out = {f"{ns}/{n}": [svc.to_dict()] for (ns, n), svc in c.services.items()}
            for (ns, _), sl in sorted(c.endpoint_slices.items()):
                owner = sl.metadata.labels["kubernetes.io/service-name"]
                out.setdefault(f"{ns}/{owner}", []).append(sl.to_dict())
            return out

        a, b = by_service(old), by_service(new)
        return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}

    def jump_rules(self, config):
        return JUMPS

    def problems(self, proxy_state):
        return list(self.problem_list)

    def udp_services(self, cluster):
        return {f"{ns}/{n}" for (ns, n), svc in cluster.services.items()
                if any(p.protocol == "UDP" for p in svc.spec.ports)}

    def udp_ports(self, cluster):
        return [UdpServicePort(f"{ns}/{n}", (svc.spec.clusterIP,), p.port, 0, frozenset({"10.244.1.1"}))
                for (ns, n), svc in cluster.services.items() for p in svc.spec.ports
                if p.protocol == "UDP"]

    def health_checks(self, proxy_state):
        return {}


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class NoHC:
    def sync(self, wanted):
        return []

    def close_all(self):
        pass


@pytest.fixture
def env(tmp_path):
    clock = FakeClock()
    ipt = FakeIptables()
    backend = StandInBackend()
    cleaned: list[list[UdpServicePort]] = []
    cfg = ProxierConfig(hostname="node1", iptables_mode="legacy", sync_period=30.0, min_sync_period=1.0)
    d = Daemon(cfg, str(tmp_path), ipt=ipt, backend=backend, hc=NoHC(), clock=clock,
               conntrack_clean=lambda ports, fam: cleaned.append(list(ports)) or [])

    class Env:
        pass

    e = Env()
    e.d, e.ipt, e.backend, e.clock, e.dir, e.cleaned = d, ipt, backend, clock, tmp_path, cleaned

    def publish(items, gen):
        write_state(tmp_path, items, gen)

    def step(dt=0.0):
        clock.t += dt
        d.step()

    e.publish, e.step = publish, step
    return e


BASE = [service("ns1", "svc1", "10.96.0.1"), endpoint_slice("ns1", "svc1", ["10.244.1.1"]),
        service("ns1", "svc2", "10.96.0.2")]


def test_first_sync_is_full_installs_canaries_and_jumps_and_reports(env):
    env.step()
    assert env.ipt.restores == []  # no state yet: nothing is installed
    env.publish(BASE, 5)
    env.step()
    assert len(env.ipt.restores) == 1
    assert env.backend.renders[0]["changed"] is None  # full
    assert all(CANARY_CHAIN in env.ipt.tables[t] for t in ("filter", "nat", "mangle"))
    assert "KUBE-SERVICES" in env.ipt.tables["nat"]  # created before the jump to it
    assert env.ipt.rules == [("nat", "PREROUTING", tuple(JUMPS[0][2]))]
    assert read_applied(env.dir, "node1") == 5


def test_partial_sync_names_only_changed_services_and_is_rate_limited(env):
    env.publish(BASE, 1)
    env.step()
    items = [*BASE[:2], service("ns1", "svc2", "10.96.0.2", port=81)]
    env.publish(items, 2)
    env.step(0.3)  # within min_sync_period: waits
    assert len(env.ipt.restores) == 1 and read_applied(env.dir, "node1") == 1
    env.step(0.8)
    assert env.backend.renders[-1]["changed"] == {"ns1/svc2"}
    assert read_applied(env.dir, "node1") == 2
    n_rules = len(env.ipt.rules)
    # a new generation with identical content: a partial sync with nothing changed
    env.publish(items, 3)
    env.step(1.1)
    assert env.backend.renders[-1]["changed"] == set()
    assert read_applied(env.dir, "node1") == 3
    assert len(env.ipt.rules) == n_rules  # jump rules are only ensured on full syncs


def test_full_sync_an_hour_after_the_last_one(env):
    # kube-proxy: nothing syncs in between without a change (the runner's maxInterval is
    # an hour), and any sync an hour after the last full one is full (FullSyncPeriod).
    env.publish(BASE, 1)
    env.step()
    env.step(30.5)  # a sync period later: no periodic resync
    env.step(3500.0)
    assert len(env.ipt.restores) == 1
    env.step(100.0)
    assert len(env.ipt.restores) == 2 and env.backend.renders[-1]["changed"] is None
    env.publish([*BASE, service("ns2", "svc3", "10.96.0.3")], 2)
    env.step(1.1)
    assert env.backend.renders[-1]["changed"] == {"ns2/svc3"}
    env.step(3600.0)  # an hour after the last full sync, not after the last sync
    assert len(env.ipt.restores) == 4 and env.backend.renders[-1]["changed"] is None


def test_failed_restore_keeps_generation_unreported_retries_full_with_backoff(env, caplog):
    env.publish(BASE, 1)
    env.step()
    env.ipt.fail_next = 2
    env.publish([*BASE, service("ns2", "svc3", "10.96.0.3")], 2)
    with caplog.at_level(logging.INFO, logger="refproxier"):
        env.step(1.1)
        assert read_applied(env.dir, "node1") == 1
        assert "input line 2: '-A KUBE-SERVICES -j ACCEPT'" in caplog.text
        env.step(0.4)  # first backoff is 0.5 s... but min_sync_period (1 s) also applies
        assert len(env.ipt.restores) == 2
        env.step(0.7)
        assert len(env.ipt.restores) == 3  # second failure; backoff now 1 s
        env.step(0.9)
        assert len(env.ipt.restores) == 3
        env.step(0.2)
    assert len(env.ipt.restores) == 4
    assert env.backend.renders[-1]["changed"] is None  # the retry is a full sync
    assert read_applied(env.dir, "node1") == 2
    assert env.d.failed_syncs == 2


def test_unparsable_state_keeps_rules_and_waits_for_next_generation(env, caplog):
    env.publish(BASE, 1)
    env.step()
    (env.dir / STATE_FILE).write_text("kind: List\nitems: [\n")
    with caplog.at_level(logging.ERROR, logger="refproxier"):
        env.step(2)
        env.step(2)
    assert len(env.ipt.restores) == 1
    assert caplog.text.count("keeping current rules") == 1  # logged once, not every poll
    bad = service("ns1", "svc1", "10.96.0.1")
    bad["spec"]["ports"][0]["port"] = "eighty"
    env.publish([bad], 2)
    env.step(2)
    assert len(env.ipt.restores) == 1 and read_applied(env.dir, "node1") == 1
    env.publish(BASE[:2], 3)
    env.step(2)
    assert read_applied(env.dir, "node1") == 3
    assert env.backend.renders[-1]["services"] == [("ns1", "svc1")]


def test_build_failure_keeps_rules(env):
    env.publish(BASE, 1)
    env.step()
    env.backend.fail_build = True
    env.publish(BASE[:1], 2)
    env.step(2)
    assert len(env.ipt.restores) == 1 and read_applied(env.dir, "node1") == 1


def test_problems_are_logged_once_per_appearance(env, caplog):
    env.backend.problem_list = ["Service ns1/svc1: field spec.ports[0].targetPort: bad"]
    with caplog.at_level(logging.WARNING, logger="refproxier"):
        env.publish(BASE, 1)
        env.step()
        env.publish(BASE, 2)
        env.step(2)
    assert caplog.text.count("field spec.ports[0].targetPort") == 1
    assert read_applied(env.dir, "node1") == 2  # problems do not stop the rest


def test_canary_missing_forces_full_resync(env):
    env.publish(BASE, 1)
    env.step()
    for table in ("mangle", "nat", "filter"):  # a firewall reload
        env.ipt.tables[table].discard(CANARY_CHAIN)
    env.ipt.rules.clear()
    env.step(1.1)
    assert len(env.ipt.restores) == 2 and env.backend.renders[-1]["changed"] is None
    assert CANARY_CHAIN in env.ipt.tables["nat"] and env.ipt.rules


def test_only_the_mangle_canary_is_watched_as_kube_proxy_does(env):
    # kube-proxy's Monitor polls tables[0] (mangle) only; real kube-proxy v1.37.2 leaves a
    # nat-only flush alone (seen in this suite), and so must the reference
    env.publish(BASE, 1)
    env.step()
    env.ipt.tables["nat"].discard(CANARY_CHAIN)
    env.step(1.1)
    assert len(env.ipt.restores) == 1


def test_udp_change_triggers_conntrack_cleanup_only_then(env):
    udp = [service("ns1", "dns", "10.96.0.10", port=53, protocol="UDP", port_name="dns"),
           endpoint_slice("ns1", "dns", ["10.244.1.1"], port=53, protocol="UDP", port_name="dns")]
    env.publish(BASE + udp, 1)
    env.step()
    assert len(env.cleaned) == 1 and env.cleaned[0][0].addresses == ("10.96.0.10",)
    env.publish([*BASE[:2], service("ns1", "svc2", "10.96.0.2", port=82), *udp], 2)
    env.step(2)
    assert len(env.cleaned) == 1  # a TCP-only change
    env.publish(BASE, 3)  # the UDP service is removed
    env.step(2)
    assert len(env.cleaned) == 2


def test_new_generation_after_a_failure_is_tried_without_waiting_for_the_backoff(env):
    env.publish(BASE, 1)
    env.step()
    env.ipt.fail_next = 1
    env.publish(BASE[:1], 2)
    env.step(1.0)
    assert len(env.ipt.restores) == 2 and env.d.retry_at is not None
    env.d.backoff = 10.0
    env.ipt.fail_next = 1
    env.step(1.0)  # the 0.5 s retry: fails again, next retry in 10 s
    assert len(env.ipt.restores) == 3
    env.publish(BASE, 3)
    env.step(1.0)  # a new generation: tried now (min_sync_period still applies)
    assert len(env.ipt.restores) == 4 and read_applied(env.dir, "node1") == 3


def test_large_clusters_list_stale_chains_once_per_sync_period(env, monkeypatch):
    # kube-proxy's large-cluster mode (> 1,000 endpoints): iptables-save for stale-chain
    # cleanup only once per sync period; smaller clusters list on every sync.
    env.ipt.tables["nat"].add("KUBE-SVC-STALE0000000000")
    env.publish(BASE, 1)
    env.step()
    assert "KUBE-SVC-STALE0000000000" in env.backend.renders[-1]["existing"]
    monkeypatch.setattr(type(env.backend), "build",
                        lambda self, cluster, config: _Large(cluster), raising=True)
    env.publish([*BASE, service("ns2", "svc3", "10.96.0.3")], 2)
    env.step(1.1)
    # (a different size: the daemon notices a new state.yaml by its stat)
    env.publish([*BASE, service("ns2", "svc-four", "10.96.0.44")], 3)
    env.step(1.1)
    assert len(env.backend.renders) == 3
    assert env.backend.renders[-1]["changed"] == {"ns2/svc3", "ns2/svc-four"}
    assert env.backend.renders[-1]["existing"] == frozenset()  # listed at the first sync only
    env.step(29.0)
    env.publish([*BASE, service("ns2", "svc-five", "10.96.0.55")], 4)
    env.step(1.5)  # a partial sync, more than a sync period after the listing
    assert len(env.backend.renders) == 4 and env.backend.renders[-1]["changed"] is not None
    assert "KUBE-SVC-STALE0000000000" in env.backend.renders[-1]["existing"]


class _Large:
    """The stand-in state, claiming kube-proxy's large-cluster size."""

    total_endpoints = 1001

    def __init__(self, cluster):
        self._cluster = cluster

    def __getattr__(self, name):
        return getattr(self._cluster, name)
