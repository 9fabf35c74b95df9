"""The daemon's sync loop driving nftables mode (refproxier.nft_exec) against an in-memory
nft (tests' Table model): full replace first, in-place updates after, full replace again
after a failure or when the table vanished. No root needed."""

from __future__ import annotations

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

    # A failed transaction: the retry replaces the whole table.
    fake.fail_next = True
    write_state(tmp_path, BASE, 3)
    clock.t += 2
    d.step()
    assert d.failed_syncs == 1
    clock.t += 5
    d.step()
    assert d.syncs == 3 and "delete table ip kube-proxy" in fake.scripts[-1]

    # Someone deletes the table: noticed like a missing canary, the table is rebuilt.
    fake.table = Table()
    clock.t += 2
    d.step()
    assert d.syncs == 4 and fake.table.exists and "delete table ip kube-proxy" in fake.scripts[-1]

    # The hourly full sync keeps the table (and so the affinity sets' entries).
    clock.t += 3601
    d.step()
    assert d.syncs == 5
    last = fake.scripts[-1]
    assert "delete table" not in last and "flush map ip kube-proxy service-ips" in last
    assert not any(line.startswith(("delete set", "flush set ip kube-proxy affinity-")) for line in last.splitlines())
