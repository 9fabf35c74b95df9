"""One cluster life cycle: start a cluster, hand it over, tear it down.

``running_cluster(options, spec, workdir)`` builds ``spec``'s topology, starts the control
plane and the proxier under test on every node (``harness.options.ClusterOptions`` says
which and how), waits for the first sync, and removes everything afterwards. The session
fixture, the per-module clusters of ``scoped_cluster`` and the scenario runner all go
through it. Example::

    options = ClusterOptions(control_plane="api")
    with running_cluster(options, TopologySpec(nodes=[NodeSpec("node1")]), workdir) as env:
        svc = env.create_service([env.add_pod()])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.cluster import ClusterEnv
from harness.controlplane.kubeapiserver import ControlPlaneError
from harness.controlplane.statedir import SyncTimeout
from harness.options import ClusterOptions
from harness.proxiers import ProxierSpec
from harness.proxiers.process import ProxierCrashed
from harness.topology.netns import Topology
from harness.topology.spec import TopologySpec


class ClusterStartFailed(Exception):
    """The proxier under test crashed or never applied the first state: a finding about
    the proxier (the message says which node and why), not a harness error."""


def keep_hint(topo: Topology, workdir: Path) -> str:
    """What ``--keep-on-failure`` prints: how to enter each namespace, where the logs are."""
    return "\n".join([
        "--keep-on-failure: the namespaces are still up. Enter one with:",
        *(f"  ip netns exec {h.netns} bash    # {h.name} {h.ip}" for h in topo.hosts.values()),
        f"state and proxier logs: {workdir}",
        "the next run removes them (or: ip netns list | grep PREFIX | xargs -n1 ip netns del)",
    ])


def require_root() -> None:
    """Clusters need root (namespaces, netfilter); skip the test without it."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root: network namespaces and netfilter (run: sudo bash run.sh conformance)")


@contextmanager
def running_cluster(options: ClusterOptions, spec: TopologySpec, workdir: Path, *,
                    proxier: ProxierSpec | None = None,
                    keep: Callable[[], bool] = lambda: False,
                    on_keep: Callable[[str], None] = print) -> Iterator[ClusterEnv]:
    """``spec``'s topology with the proxier under test synced on every node; removed
    afterwards, or left up for a person when ``options.keep_on_failure`` and ``keep()``
    say so (``on_keep`` gets the hint). ``proxier`` overrides ``options.proxier_spec()``
    (a scenario's extra flags). Raises ``ClusterStartFailed`` if a proxier crashes or
    never syncs."""
    proxier = proxier or options.proxier_spec()
    topo = Topology(spec, timing=options.timing())
    topo.start()
    env: ClusterEnv | None = None
    try:
        env = ClusterEnv(topo, proxier, workdir, options)
        try:
            env.start()
        except (ProxierCrashed, SyncTimeout, ControlPlaneError) as exc:
            raise ClusterStartFailed(f"proxier {proxier.name!r} did not start (control plane "
                                     f"{options.control_plane}): {exc}") from None
        yield env
    finally:
        if options.keep_on_failure and keep():
            topo.keep()
            on_keep(keep_hint(topo, Path(workdir)))
        else:
            if env is not None:
                env.stop()
            topo.close()
