"""The options that shape a run's clusters, read once from the pytest config.

``ClusterOptions`` holds every command-line option a cluster depends on (control plane,
proxier and its version, iptables flavour, family, pod network, timing, ...). The session
cluster, the per-module clusters of ``scoped_cluster`` and the scenario runner all take it,
so an option reaches each of them the same way. A new option is one field here, named as
the option's ``dest`` (``--kube-proxy-version`` -> ``kube_proxy_version``):
``from_config`` reads every field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness.proxiers import ProxierConfigError, ProxierSpec, resolve
from harness.timing import Timing, default_timing
from harness.topology.spec import IPV6_PLAN, ClientSpec, NodeSpec, TopologySpec


@dataclass(frozen=True)
class ClusterOptions:
    """What the command line says about the clusters of a run (defaults: the plugin's)."""

    proxier: str | None = None
    proxier_cmd: str | None = None
    proxier_capabilities: str | None = None
    proxier_version: str | None = None
    kube_proxy_version: str | None = None
    control_plane: str = "statedir"
    iptables: str = "nft"
    ip_family: str = "ipv4"
    pod_network: str = "routed"
    nodes: int = 2
    clients: int = 1
    timeout_scale: float | None = None
    keep_on_failure: bool = False

    @classmethod
    def from_config(cls, config: Any) -> ClusterOptions:
        """Every field from the option of the same name (its default where the option is
        not registered, e.g. in a bare pytest session)."""
        values = {}
        for f in dataclasses.fields(cls):
            value = config.getoption(f.name, None)
            values[f.name] = f.default if value is None else value
        return cls(**values)

    def proxier_spec(self) -> ProxierSpec:
        """The proxier under test (``ProxierConfigError`` says what is wrong)."""
        spec = resolve(self.proxier, self.proxier_cmd, self.proxier_capabilities,
                       self.proxier_version, self.kube_proxy_version)
        if spec.needs_api and self.control_plane == "statedir":
            raise ProxierConfigError(
                f"--proxier {spec.name} reads only from a Kubernetes API server: add "
                "--control-plane api")
        return spec

    @property
    def proxier_label(self) -> str:
        """The proxier's name as known-gap lists use it: ``reference`` by default,
        ``custom`` for an unnamed ``--proxier-cmd``."""
        return self.proxier or ("custom" if self.proxier_cmd else "reference")

    def timing(self) -> Timing:
        """The harness's timeouts, scaled by ``--timeout-scale``."""
        base = default_timing()
        return base.scaled(self.timeout_scale) if self.timeout_scale else base

    def session_topology(self) -> TopologySpec:
        """The session cluster: ``--nodes`` nodes, ``--clients`` clients (16 extra
        addresses each, for affinity), ``--ip-family``, ``--pod-network``."""
        if self.nodes < 1 or self.clients < 1:
            raise ValueError("--nodes and --clients must be at least 1")
        plan = IPV6_PLAN if self.ip_family == "ipv6" else {}
        return TopologySpec(
            **plan,
            nodes=[NodeSpec(name=f"node{i + 1}") for i in range(self.nodes)],
            clients=[ClientSpec(name=f"client{i + 1}", extra_addresses=16)
                     for i in range(self.clients)],
            pod_network=self.pod_network,
            # Bridge mode as kubelet sets it up (--hairpin-mode=hairpin-veth): without
            # hairpin_mode a pod cannot reach itself through a Service (test_hairpin.py).
            hairpin_mode=self.pod_network == "bridge",
        )

    def apply_to(self, spec: TopologySpec, *, pod_network_pinned: bool = False) -> TopologySpec:
        """A cluster of a module or scenario of its own: its family and hosts stay its
        own; ``--pod-network`` applies unless the spec pins one (a bug that only shows on
        a bridge, say)."""
        if pod_network_pinned:
            return spec
        return dataclasses.replace(spec, pod_network=self.pod_network)
