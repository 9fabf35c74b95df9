"""One allocator per topology: every name and address a run hands out comes from here.

Namespaces ``<prefix>-<role><n>``, interface names checked against IFNAMSIZ, pod IPs from
each node's pod CIDR (never reused in a run, so a new pod is never confused with conntrack
state of a removed one), and for the cluster on top: ClusterIPs from the service range(s),
nodePorts, healthCheckNodePorts and object names (``svc1``, ``svc1-s2``, ``pod3``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from .spec import IPAddress, IPNetwork, Resolved, TopologyError, usable_hosts

IFNAMSIZ = 15  # usable characters of an interface name
NODE_PORT_BASE = 30000
HEALTH_CHECK_PORT_BASE = 32000
# ClusterIPs start past .0.255: .0.1 is traditionally the apiserver's.
CLUSTER_IP_OFFSET = 256 + 1



class Allocator:
    """Names and addresses for one run (see the module docstring)."""

    def __init__(self, prefix: str, resolved: Resolved | None = None) -> None:
        self.prefix = prefix
        self._counters: dict[str, int] = {}
        self._next_pod_host: dict[str, int] = {}
        self._used_pod_ips: set[IPAddress] = set()
        self._resolved = resolved
        self._cluster_ips: dict[int, Iterator[str]] = {}
        self._node_ports = itertools.count(NODE_PORT_BASE)
        self._hc_ports = itertools.count(HEALTH_CHECK_PORT_BASE)
        self._names = itertools.count(1)

    def next_index(self, role: str) -> int:
        self._counters[role] = self._counters.get(role, 0) + 1
        return self._counters[role]

    def netns_name(self, role: str, index: int | None = None) -> str:
        n = self.next_index("ns-" + role) if index is None else index
        return f"{self.prefix}-{role}{n}"

    @staticmethod
    def ifname(name: str) -> str:
        if not name or len(name) > IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
            raise TopologyError("interface", "name", f"{name!r} is not a valid interface name",
                                f"at most {IFNAMSIZ} characters, no '/' or whitespace")
        return name

    def reserve_pod_ip(self, ip: IPAddress) -> None:
        self._used_pod_ips.add(ip)

    def pod_ip(self, node: str, pod_cidr: IPNetwork) -> IPAddress:
        lo, hi = usable_hosts(pod_cidr)
        host = self._next_pod_host.get(node, lo)
        while host <= hi:
            ip = pod_cidr.network_address + host
            host += 1
            if ip not in self._used_pod_ips:
                self._next_pod_host[node] = host
                self._used_pod_ips.add(ip)
                return ip
        raise TopologyError(f"node {node!r}", "pod_cidr", f"{pod_cidr} has no free address",
                            "use a larger pod CIDR or fewer pods")

    # --- the cluster's: Services and objects ---------------------------------------------

    def _service_range(self, version: int) -> IPNetwork:
        r = self._resolved
        if r is None:
            raise ValueError("no service range: the allocator has no resolved topology")
        for net in (r.service, r.service6):
            if net is not None and net.version == version:
                return net
        raise ValueError(f"no IPv{version} service range: the topology is not dual-stack "
                         "(TopologySpec families=('IPv4', 'IPv6'))")

    def cluster_ip(self, family: str | None = None) -> str:
        """A free ClusterIP of the primary service range, or of ``family`` ("IPv4"/"IPv6")."""
        assert self._resolved is not None
        version = self._resolved.service.version if family is None else (6 if family == "IPv6" else 4)
        if version not in self._cluster_ips:
            net = self._service_range(version)
            self._cluster_ips[version] = (str(net.network_address + i)
                                          for i in itertools.count(CLUSTER_IP_OFFSET))
        return next(self._cluster_ips[version])

    def node_port(self) -> int:
        return next(self._node_ports)

    def health_check_port(self) -> int:
        return next(self._hc_ports)

    def name(self, prefix: str) -> str:
        """``prefix`` and a number unique in the run (one counter for every prefix)."""
        return f"{prefix}{next(self._names)}"
