"""The daemon's sync loop driving nftables mode (refproxier.nft_exec) against an in-memory
nft (tests' Table model): a new table first, in-place updates after; after a failure a full
sync in place over the listed table (kube-proxy's), and if that fails too, a replaced
table; a new table again when it vanished; a full sync in place over a table found at
start. No root needed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from refproxier import nft_exec
from refproxier.config import ProxierConfig
from refproxier.daemon import Daemon
from refproxier.netfilter_exec import RestoreResult
from servicemodel.statedir import write_state
from tests.unit.refproxier_daemon.builders import endpoint_slice, service
from tests.unit.refproxier_nft.nftscript import NftError, Table


@dataclass
class FakeNft:
    family: int = 4
    nft_family: str = "ip"
    table: Table = field(default_factory=Table)
    scripts: list[str] = field(default_factory=list)
    fail_next: bool = False

    def apply(self, script: str) -> RestoreResult:
        if not script:
            return RestoreResult(True, 0, "")
        self.scripts.append(script)
        if self.fail_next:
            self.fail_next = False
            return RestoreResult(False, 1, "/dev/stdin:2:1-6: Error: injected", 2, script.splitlines()[1])
        trial = Table(self.table.exists, {k: list(v) for k, v in self.table.chains.items()},
                      dict(self.table.containers), {k: dict(v) for k, v in self.table.elements.items()})
        try:
            trial.apply(script)
        except NftError as e:
            return RestoreResult(False, 1, str(e))
        self.table = trial  # atomic, as nft -f
        return RestoreResult(True, 0, "")

    def table_exists(self) -> bool:
        return self.table.exists

    def existing(self) -> nft_exec.ExistingTable | None:
        """What Nft.existing lists: chains, and sets with their type and timeout."""
        if not self.table.exists:
            return None
        sets = {}
        for name, body in self.table.containers.items():
            if body.startswith("{ type") and "verdict" not in body:
                typ = body.split()[2]
                m = re.search(r"timeout (\d+)s", body)
                sets[name] = (typ, int(m.group(1)) if m else None)
        return nft_exec.ExistingTable(frozenset(self.table.chains), sets)


class NoHC:
    def sync(self, wanted):
        return []

    def close_all(self):
        pass


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def _daemon(tmp_path):
    cfg = nft_exec.nftables_config(ProxierConfig(hostname="node1", node_ips=("192.0.2.1",),
                                                 service_cidrs=("10.96.0.0/16",)))
    ops, backend = nft_exec.daemon_parts(cfg)
    fake = FakeNft()
    ops.nft = fake  # type: ignore[assignment]
    backend._nft = fake  # type: ignore[assignment]
    clock = Clock()
    d = Daemon(cfg, str(tmp_path), ipt=ops, backend=backend, hc=NoHC(), clock=clock,
               conntrack_clean=lambda ports, fam: [])
    return d, fake, clock


BASE = [service("ns1", "svc1", "10.96.0.1"), endpoint_slice("ns1", "svc1", ["10.244.1.1"]),
        service("ns1", "svc2", "10.96.0.2", sessionAffinity="ClientIP"),
        endpoint_slice("ns1", "svc2", ["10.244.1.2"])]


def test_nftables_mode_syncs(tmp_path):
    d, fake, clock = _daemon(tmp_path)
    write_state(tmp_path, BASE, 1)
    d.step()
    assert d.syncs == 1 and len(fake.scripts) == 1
    assert fake.scripts[0].splitlines()[1] == "delete table ip kube-proxy"  # first: replace
    assert "service-ips" in fake.table.containers

    # An endpoint change: a partial, in-place update of svc1 only.
    write_state(tmp_path, BASE[:1] + [endpoint_slice("ns1", "svc1", ["10.244.1.1", "10.244.1.3"])] + BASE[2:], 2)
    clock.t += 2
    d.step()
    assert d.syncs == 2
    second = fake.scripts[-1]
    assert "delete table" not in second and "ns1/svc2" not in second and "ns1/svc1" in second

    # A failed transaction (a partial sync).
    fake.fail_next = True
    write_state(tmp_path, BASE, 3)
    clock.t += 2
    d.step()
    assert d.failed_syncs == 1
    clock.t += 5
    d.step()
    # The retry is kube-proxy's full sync over the listed table: nothing replaced, the
    # base chains re-created once.
    retry = fake.scripts[-1]
    assert d.syncs == 3 and "delete table" not in retry
    assert "delete chain ip kube-proxy nat-prerouting" in retry and "flush map ip kube-proxy service-ips" in retry
    assert fake.table == _fresh(BASE)

    # A failed sync over the listed table: the next one replaces the table.
    fake.fail_next = True
    write_state(tmp_path, BASE[:2], 4)
    clock.t += 2
    d.step()
    fake.fail_next = True
    clock.t += 5
    d.step()
    assert d.failed_syncs == 3 and "delete table" not in fake.scripts[-1]  # listed, failed
    clock.t += 10
    d.step()
    assert d.syncs == 4 and "delete table ip kube-proxy" in fake.scripts[-1]
    assert fake.table == _fresh(BASE[:2])
    write_state(tmp_path, BASE, 5)
    clock.t += 2
    d.step()
    assert d.syncs == 5

    # Someone deletes the table: noticed like a missing canary, the table is rebuilt.
    fake.table = Table()
    clock.t += 2
    d.step()
    assert d.syncs == 6 and fake.table.exists and "delete table ip kube-proxy" in fake.scripts[-1]

    # The hourly full sync keeps the table (and so the affinity sets' entries).
    clock.t += 3601
    d.step()
    assert d.syncs == 7
    last = fake.scripts[-1]
    assert "delete table" not in last and "flush map ip kube-proxy service-ips" in last
    assert not any(line.startswith(("delete set", "flush set ip kube-proxy affinity-")) for line in last.splitlines())


def _fresh(objs: list) -> Table:
    """The table a new daemon builds for ``objs`` (a first sync on an empty node)."""
    from refproxier.nftables import render_nft
    from tests.unit.refproxier.builders import proxy_state

    cfg = nft_exec.nftables_config(ProxierConfig(hostname="node1", node_ips=("192.0.2.1",),
                                                 service_cidrs=("10.96.0.0/16",)))
    state = proxy_state(*objs, config=cfg)
    t = Table()
    t.apply(render_nft(state, cfg))
    return t


def test_a_table_found_at_start_is_synced_in_place_and_keeps_affinity_sets(tmp_path):
    """kube-proxy's first sync over the table a previous run left: a full sync in place
    (base chains re-created once, stale chains and affinity sets deleted), never a replaced
    table, so that an affinity set still wanted keeps its entries."""
    d, fake, clock = _daemon(tmp_path)
    write_state(tmp_path, BASE + [service("ns2", "gone", "10.96.0.9", sessionAffinity="ClientIP"),
                                  endpoint_slice("ns2", "gone", ["10.244.2.9"])], 1)
    d.step()
    assert d.syncs == 1
    kept = next(n for n in fake.table.containers if n.startswith("affinity-") and "ns1/svc2" in n)
    fake.table.elements[kept]["192.0.2.77"] = None  # a client the kernel remembered
    stale = [c for c in fake.table.chains if "ns2/gone" in c]
    assert stale

    d2, _, clock2 = _daemon(tmp_path)
    d2.ipt.nft = fake  # the restarted daemon finds the table
    d2.backend._nft = fake
    write_state(tmp_path, BASE, 2)
    d2.step()
    script = fake.scripts[-1]
    assert d2.syncs == 1 and "delete table" not in script
    assert f"delete chain ip kube-proxy {stale[0]}" in script
    assert fake.table.elements[kept] == {"192.0.2.77": None}
    assert not any("ns2/gone" in n for n in [*fake.table.chains, *fake.table.containers])
    fake.table.elements[kept].clear()
    assert fake.table == _fresh(BASE)
