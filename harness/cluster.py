"""A running cluster: topology + proxier on every node + control plane, and typed handles.

``ClusterEnv`` is the long-lived part (one per pytest-xdist worker): namespaces, the echo
server, the proxier processes, the state directory. ``ClusterScope`` is what one test sees:
it creates pods and Services through the env and removes them when the test ends, so tests
never share Services or pods.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import model, trafficdist
from harness.controlplane.apiserver import ApiControlPlane
from harness.controlplane.statedir import SYSTEM_NAMESPACE, StateDirControlPlane, SyncTimeout
from harness.model import EndpointSpec, NodeMeta, PortSpec, ServiceSpecIn, SliceSpec
from harness.options import ClusterOptions
from harness.proxiers import ProxierSpec, python_executable
from harness.proxiers.process import ProxierProcess
from harness.timing import Timing
from harness.topology.alloc import Allocator
from harness.topology.netns import Client, Node, Pod

TEST_NAMESPACE = "conformance"
DEFAULT_POD_PORTS: tuple[tuple[int, str], ...] = ((8080, "tcp"), (8080, "udp"), (9090, "tcp"), (9090, "udp"))
SENTINEL_PORT_BASE = 20000
ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass
class ServiceHandle:
    """A Service published to the proxiers, with its endpoints.

    Changes (``set_endpoints``, ``update``, ``delete``) publish a new generation and wait until
    every proxier has applied it.
    """

    env: ClusterEnv
    spec: ServiceSpecIn
    slices: list[SliceSpec] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def cluster_ip(self) -> str:
        assert self.spec.cluster_ip is not None
        return self.spec.cluster_ip

    @property
    def cluster_ips(self) -> list[str]:
        """Every clusterIP, primary first (two on a dual-stack Service)."""
        return list(self.spec.cluster_ips) or [self.cluster_ip]

    @property
    def ip_families(self) -> list[str]:
        return [model.family_of(ip) for ip in self.cluster_ips]

    def cluster_ip_of(self, family: str) -> str:
        """The clusterIP of ``family`` ("IPv4" or "IPv6")."""
        for ip in self.cluster_ips:
            if model.family_of(ip) == family:
                return ip
        raise KeyError(f"Service {self.namespace}/{self.name} has no {family} clusterIP "
                       f"({self.cluster_ips})")

    @property
    def ports(self) -> list[PortSpec]:
        return self.spec.ports

    def port(self, name_or_index: str | int = 0) -> PortSpec:
        if isinstance(name_or_index, int):
            return self.spec.ports[name_or_index]
        for p in self.spec.ports:
            if p.name == name_or_index:
                return p
        raise KeyError(f"Service {self.namespace}/{self.name} has no port named {name_or_index!r}")

    def node_port(self, name_or_index: str | int = 0) -> int:
        np_ = self.port(name_or_index).node_port
        if np_ is None:
            raise ValueError(f"Service {self.namespace}/{self.name} has no nodePort (type {self.spec.type})")
        return np_

    @property
    def endpoint_ips(self) -> list[str]:
        return [e.ip for s in self.slices for e in s.endpoints]

    def objects(self) -> list[dict[str, Any]]:
        objs = [model.service_object(self.spec)]
        slices = trafficdist.reconcile(self.spec.traffic_distribution, self.slices)
        objs += [model.endpoint_slice_object(self.name, self.namespace, s) for s in slices]
        return objs

    def set_endpoints(self, endpoints: Iterable[Any], *, sync: bool = True) -> None:
        """Replace the endpoints: pods (ready, on their node) or ``EndpointSpec``s."""
        self.slices = self.env.slices_for(self, endpoints)
        self.env.put_service(self)
        if sync:
            self.env.sync()

    def set_slices(self, slices: list[SliceSpec], *, sync: bool = True) -> None:
        self.slices = slices
        self.env.put_service(self)
        if sync:
            self.env.sync()

    def update(self, *, sync: bool = True, **changes: Any) -> None:
        """Change fields of the Service spec (``type=...``, ``affinity_timeout=...``)."""
        for key, value in changes.items():
            if not hasattr(self.spec, key):
                raise AttributeError(f"ServiceSpecIn has no field {key!r}")
            setattr(self.spec, key, value)
        if self.spec.type in ("NodePort", "LoadBalancer") and not (
                self.spec.type == "LoadBalancer" and self.spec.allocate_load_balancer_node_ports is False):
            for p in self.spec.ports:
                if p.node_port is None:
                    p.node_port = self.env.alloc.node_port()
        # As the API server: a LoadBalancer gets a healthCheckNodePort with eTP Local and
        # loses it with Cluster (and a new one, when switched back, unless one is given).
        local_lb = self.spec.type == "LoadBalancer" and self.spec.external_traffic_policy == "Local"
        if not local_lb:
            self.spec.health_check_node_port = None
        elif self.spec.health_check_node_port is None:
            self.spec.health_check_node_port = self.env.alloc.health_check_port()
        self.env.put_service(self)
        if sync:
            self.env.sync()

    def delete(self, *, sync: bool = True) -> None:
        """Delete the Service as a cluster does: the Service first, then (garbage
        collection) its EndpointSlices, each its own generation when ``sync``."""
        if sync:
            self.env.controlplane.remove("Service", self.namespace, self.name)
            self.env.sync()
        self.env.remove_service(self)
        if sync:
            self.env.sync()


def needs_legacy_apis(proxier: ProxierSpec) -> bool:
    """Whether the proxier is a kube-proxy release older than discovery.k8s.io/v1
    EndpointSlices (1.22; v1.21.14 still reads v1beta1): the API then also serves Endpoints
    and v1beta1 slices."""
    from harness.kubebins import Version

    return proxier.release is not None and Version.parse(proxier.release) < Version(22, 0)


class ClusterEnv:
    """Topology + echo server + proxiers + control plane for one pytest worker."""

    def __init__(self, topology: Any, proxier: ProxierSpec, workdir: Path,
                 options: ClusterOptions) -> None:
        self.topology = topology
        self.proxier_spec = proxier
        self.workdir = Path(workdir)
        self.options = options
        self.timing = options.timing()
        #: the reference proxier's iptables flavour ({iptables})
        self.iptables = options.iptables
        control_plane = options.control_plane
        if control_plane not in ("statedir", "api", "kube-apiserver"):
            raise ValueError(f"control plane {control_plane!r}: use 'statedir', 'api' or 'kube-apiserver'")
        #: "statedir" ({state_dir}/state.yaml), "api" (the harness's API server, {kubeconfig})
        #: or "kube-apiserver" (real etcd + kube-apiserver in the lan namespace, {kubeconfig})
        self.control_plane = control_plane
        self.controlplane: Any = (
            ApiControlPlane(self.workdir / "state", self.workdir,
                            legacy_apis=needs_legacy_apis(proxier)) if control_plane == "api"
            else StateDirControlPlane(self.workdir / "state"))
        if control_plane == "kube-apiserver":
            from harness.controlplane.kubeapiserver import KubeApiServerControlPlane
            self.controlplane = KubeApiServerControlPlane.for_topology(self.workdir, topology)
        resolved = getattr(topology, "resolved", None)
        self.dual_stack = bool(getattr(resolved, "dual_stack", False))
        #: the topology's allocator: ClusterIPs, node ports and names come from it too
        self.alloc: Allocator = topology.alloc
        self.proxiers: dict[str, ProxierProcess] = {}
        self.services: dict[tuple[str, str], ServiceHandle] = {}
        self._sentinel: ServiceHandle | None = None
        self.last_sync_seconds: float | None = None
        #: what tests changed on Node objects (labels, taints, deletion), by node name
        self.node_meta: dict[str, NodeMeta] = {}

    # --- addresses ---------------------------------------------------------------------
    @property
    def family(self) -> str:
        """The cluster's (primary) IP family: "IPv4" or "IPv6"."""
        return model.family_of(str(self.topology.resolved.service.network_address))

    def external_ip(self, host: int) -> str:
        """Address ``host`` of the range the clients route to the gateway node as
        external IPs (198.51.100.0/24 on IPv4; a 2001:db8::/32 documentation range on IPv6)."""
        return self._host_of(self.topology.resolved.external, host)

    def lb_ip(self, host: int) -> str:
        """Address ``host`` of the load-balancer ingress range (203.0.113.0/24 on IPv4)."""
        return self._host_of(self.topology.resolved.lb, host)

    @staticmethod
    def _host_of(net: Any, host: int) -> str:
        return str(ipaddress.ip_network(net).network_address + host)

    @staticmethod
    def host_cidr(ip: str) -> str:
        """``ip`` as a one-address CIDR (/32 or /128), e.g. for loadBalancerSourceRanges."""
        return f"{ip}/{ipaddress.ip_address(ip).max_prefixlen}"

    # --- hosts -------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        return list(self.topology.nodes.values())

    @property
    def clients(self) -> list[Client]:
        return list(self.topology.clients.values())

    @property
    def client(self) -> Client:
        return self.clients[0]

    def node(self, name_or_index: str | int) -> Node:
        if isinstance(name_or_index, int):
            return self.nodes[name_or_index]
        return self.topology.nodes[name_or_index]

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if hasattr(self.controlplane, "start"):  # api, kube-apiserver
            # on the lan router address, inside the lan namespace: every node reaches it
            self.controlplane.start(self.topology.lan_netns, str(self.topology.resolved.router))
        for node in self.nodes:
            self.controlplane.put(self._node_object(node))
        if self.control_plane != "statedir":
            # As an API server has its default one; state.yaml carries only what proxiers read.
            spec = self.topology.spec
            cidrs = [str(spec.service_cidr)] + ([str(spec.service_cidr_v6)] if self.dual_stack else [])
            self.controlplane.put(model.service_cidr_object("kubernetes", cidrs))
        if not self.proxier_spec.has("acks"):
            self._add_sentinel()
        self._publish()
        spec = self.topology.spec
        cluster_cidr, service_cidr = str(spec.cluster_cidr), str(spec.service_cidr)
        if self.dual_stack:  # comma lists, primary family first (as kube-proxy's flags)
            cluster_cidr += f",{spec.cluster_cidr_v6}"
            service_cidr += f",{spec.service_cidr_v6}"
        for node in self.nodes:
            values = {
                "node": node.name,
                "node_ip": f"{node.ip},{node.ip_of(6)}" if self.dual_stack else node.ip,
                "state_dir": str(self.controlplane.state_dir),
                "kubeconfig": str(getattr(self.controlplane, "kubeconfig", None) or ""),
                "cluster_cidr": cluster_cidr,
                "service_cidr": service_cidr,
                "python": python_executable(),
                "iptables": self.iptables,
            }
            proc = ProxierProcess(self.proxier_spec, node.name, node.netns, values,
                                  self.workdir / "logs" / f"proxier-{node.name}.log")
            self.proxiers[node.name] = proc
            proc.start()
        self.wait_synced(self.controlplane.generation, first=True)

    def _node_object(self, node: Node) -> dict[str, Any]:
        meta = self.node_meta.get(node.name)
        if self.dual_stack:
            return model.node_object(node.name, [node.ip, node.ip_of(6)], str(node.pod_cidr),
                                     [str(node.pod_cidr), node.pod_cidr6], meta=meta)
        return model.node_object(node.name, [node.ip], str(node.pod_cidr), meta=meta)

    def set_node_meta(self, node: Node | str, meta: NodeMeta, *, sync: bool = True) -> None:
        """Publish ``node``'s Node object with ``meta`` (labels, taints, deletion)."""
        n = self.node(node) if isinstance(node, str) else node
        self.node_meta[n.name] = meta
        self.controlplane.put(self._node_object(n))
        if sync:
            self.sync()

    def node_zone(self, node_name: str | None) -> str | None:
        """The node's ``topology.kubernetes.io/zone`` label (the controller's endpoint.zone)."""
        meta = self.node_meta.get(node_name or "")
        return meta.labels.get(ZONE_LABEL) if meta else None

    def stop(self) -> None:
        for proc in self.proxiers.values():
            proc.stop()
        if hasattr(self.controlplane, "stop"):
            self.controlplane.stop()

    def check_proxiers(self) -> None:
        for proc in self.proxiers.values():
            proc.check_alive()

    def sync(self, timeout: float | None = None) -> int:
        """Publish the current state and wait until every proxier has applied it (within
        ``timeout`` seconds; default: ``timing.sync_s``)."""
        gen = self._publish()
        self.wait_synced(gen, timeout=timeout)
        return gen

    @property
    def can_restart_control_plane(self) -> bool:
        """Whether the control plane has an API server to stop and start (``api``,
        ``kube-apiserver``; the state directory has none)."""
        return hasattr(self.controlplane, "stop_server")

    @contextmanager
    def control_plane_down(self) -> Iterator[None]:
        """The control plane's API server is down for the ``with`` block (connections
        refused, open watches cut) and started again after it, with the objects and
        resourceVersions it had (kube-apiserver: etcd keeps running). Publish nothing
        inside the block."""
        if not self.can_restart_control_plane:
            raise RuntimeError(f"--control-plane {self.control_plane} has no API server to stop; "
                               "use --control-plane api or --control-plane kube-apiserver")
        self.controlplane.stop_server()
        try:
            yield
        finally:
            self.controlplane.start_server()

    def _publish(self) -> int:
        if self._sentinel is not None:
            # The sentinel's port number and name follow the generation, so a reply on it
            # proves the proxier has applied at least this state. The name changes the
            # EndpointSlice too: a proxier watching Services and EndpointSlices apart has then
            # seen both streams up to the sentinel's objects, which are published last.
            n = (self.controlplane.generation + 1) % 20000
            port = self._sentinel.spec.ports[0]
            port.port, port.name = SENTINEL_PORT_BASE + n, f"g{n}"
            self._sentinel.slices = [
                replace(s, name=f"svcconf-sentinel-{s.address_type.lower()}")
                for s in self.slices_for(self._sentinel, self._sentinel_pods)]
            self.controlplane.put(*self._sentinel.objects())
        return self.controlplane.publish()

    def wait_synced(self, generation: int, first: bool = False, timeout: float | None = None) -> None:
        # The first sync includes the proxier's start-up (interpreter, first full restore).
        if timeout is None:
            timeout = self.timing.startup_s if first else self.timing.sync_s
        if self.proxier_spec.has("acks"):
            self.last_sync_seconds = self.controlplane.wait_applied(
                generation, self.proxiers, timeout, self.check_proxiers
            )
        else:
            self.last_sync_seconds = self._wait_by_probing(generation, timeout)

    def _add_sentinel(self) -> None:
        """For proxiers that do not acknowledge generations: one ready pod per node behind a
        Service whose port changes with every generation (see ``_wait_by_probing``)."""
        pods = [self.topology.add_pod(f"sentinel{i + 1}", n.name, ports=[(8080, "tcp")])
                for i, n in enumerate(self.nodes)]
        # Dual-stack: kube-proxy runs one proxier per family, each syncing on its own, so
        # the sentinel has a clusterIP of each family and the wait probes both.
        cluster_ips = ([self.alloc.cluster_ip(f) for f in ("IPv4", "IPv6")] if self.dual_stack
                       else [self.alloc.cluster_ip()])
        if self.dual_stack and self.family == "IPv6":
            cluster_ips.reverse()
        spec = ServiceSpecIn(name="svcconf-sentinel", namespace=SYSTEM_NAMESPACE,
                             ports=[PortSpec(SENTINEL_PORT_BASE, 8080, "TCP", "")],
                             cluster_ip=cluster_ips[0], cluster_ips=cluster_ips)
        self._sentinel = ServiceHandle(self, spec)
        self._sentinel_pods = pods

    def _wait_by_probing(self, generation: int, timeout: float) -> float:
        from harness.traffic.probe import Outcome, probe

        assert self._sentinel is not None
        port = self._sentinel.spec.ports[0].port
        start = time.monotonic()
        deadline = start + timeout
        for node, ip in ((n, ip) for n in self.nodes for ip in self._sentinel.cluster_ips):
            while True:
                (obs,) = probe(node, ip, port, "tcp", count=1,
                               timeout=min(0.2, self.timing.positive_s))
                if obs.outcome is Outcome.REPLY:
                    break
                self.check_proxiers()
                if time.monotonic() > deadline:
                    raise SyncTimeout(
                        f"generation {generation}: the sentinel Service "
                        f"{f'[{ip}]' if ':' in ip else ip}:{port} "
                        f"did not answer from node {node.name} within {timeout:.1f}s (last: "
                        f"{obs.outcome.name}); the proxier has not applied the state, or does "
                        "not implement ClusterIP for TCP. Check its log, or raise --timeout-scale."
                    )
                time.sleep(self.timing.poll)
        return time.monotonic() - start

    def restart_proxier(self, node: str) -> None:
        self.proxiers[node].restart()

    # --- pods and services -------------------------------------------------------------
    def add_pod(self, node: Any = None, ports: Sequence[tuple[int, str]] = DEFAULT_POD_PORTS,
                name: str | None = None) -> Any:
        node_name = node if isinstance(node, str) else (node.name if node is not None else None)
        if node_name is None:
            counts = {n.name: 0 for n in self.nodes}
            for pod in self.topology.pods.values():
                counts[pod.node.name if hasattr(pod.node, "name") else pod.node] += 1
            node_name = min(counts, key=lambda n: (counts[n], n))
        return self.topology.add_pod(name or f"pod{self.alloc.next_index('pod-name')}", node_name, ports=list(ports))

    def remove_pod(self, pod: Any) -> None:
        self.topology.remove_pod(pod if isinstance(pod, str) else pod.name)

    def slice_for(self, svc: ServiceHandle, endpoints: Iterable[Any]) -> SliceSpec:
        eps = []
        for e in endpoints:
            if isinstance(e, EndpointSpec):
                eps.append(e)
            else:  # a pod handle
                node = e.node.name if hasattr(e.node, "name") else e.node
                eps.append(EndpointSpec(ip=e.ip, node=node, pod=e.name, zone=self.node_zone(node)))
        ports = model.slice_ports_for(svc.ports, {"http": 8080, "alt": 9090})
        # single-stack: the slice's addressType is the Service's family (IPv6 on an IPv6 cluster)
        family = model.family_of(eps[0].ip) if eps else svc.ip_families[0]
        return SliceSpec(name=f"{svc.name}-{self.alloc.name('s')}", endpoints=eps, ports=ports,
                         address_type=family)

    def slices_for(self, svc: ServiceHandle, endpoints: Iterable[Any]) -> list[SliceSpec]:
        """The Service's EndpointSlices for ``endpoints``: one, or on a dual-stack Service
        one per addressType (a pod's address of that family; an ``EndpointSpec`` goes to
        the slice of its address's family)."""
        endpoints = list(endpoints)
        families = svc.ip_families
        if len(families) == 1:
            return self._keep_names(svc, [self.slice_for(svc, endpoints)])
        out = []
        for fam in families:
            eps = [e if isinstance(e, EndpointSpec) else
                   EndpointSpec(ip=e.ip_of(fam), node=e.node.name if hasattr(e.node, "name")
                                else e.node, pod=e.name)
                   for e in endpoints]
            s = self.slice_for(svc, [e for e in eps if model.family_of(e.ip) == fam])
            s.address_type = fam
            out.append(s)
        return self._keep_names(svc, out)

    @staticmethod
    def _keep_names(svc: ServiceHandle, slices: list[SliceSpec]) -> list[SliceSpec]:
        # As the EndpointSlice controller does, a Service's slices are updated in place: a
        # new name would reach a proxier as a DELETED then an ADDED event, and between the
        # two it may briefly see (and refuse) a Service without endpoints.
        for new, old in zip(slices, svc.slices, strict=False):  # a family may come or go
            new.name = old.name
        return slices

    def create_service(self, endpoints: Iterable[Any] = (), *, ports: Sequence[PortSpec] | None = None,
                       type: str = "ClusterIP", name: str | None = None, sync: bool = True,
                       ip_families: Sequence[str] | None = None,
                       **fields: Any) -> ServiceHandle:
        """Publish a Service (and its EndpointSlice) and wait until every proxier has it.

        ``ip_families=("IPv4", "IPv6")`` (dual-stack topology): a ClusterIP of each family
        and one EndpointSlice per addressType, e.g.
        ``svc = cluster.create_service(pods, ip_families=("IPv4", "IPv6"))``.
        """
        if ip_families and "cluster_ips" not in fields:
            fields["cluster_ips"] = [self.alloc.cluster_ip(f) for f in ip_families]
            fields.setdefault("cluster_ip", fields["cluster_ips"][0])
        ports = [PortSpec(**vars(p)) for p in (ports or [PortSpec(80, 8080, "TCP", "")])]
        if type == "NodePort" or (type == "LoadBalancer"
                                   and fields.get("allocate_load_balancer_node_ports") is not False):
            for p in ports:
                if p.node_port is None:
                    p.node_port = self.alloc.node_port()
        spec = ServiceSpecIn(name=name or self.alloc.name("svc"), namespace=TEST_NAMESPACE,
                             ports=ports, cluster_ip=fields.pop("cluster_ip", None) or self.alloc.cluster_ip(),
                             type=type, **fields)
        if (type == "LoadBalancer" and spec.external_traffic_policy == "Local"
                and spec.health_check_node_port is None):
            spec.health_check_node_port = self.alloc.health_check_port()
        svc = ServiceHandle(self, spec)
        endpoints = list(endpoints)
        svc.slices = self.slices_for(svc, endpoints) if endpoints else []
        self.put_service(svc)
        if sync:
            self.sync()
        return svc

    def put_service(self, svc: ServiceHandle) -> None:
        self.controlplane.remove_where(
            lambda o: o["kind"] == "EndpointSlice"
            and (o["metadata"].get("namespace"), (o["metadata"].get("labels") or {}).get(model.SERVICE_NAME_LABEL))
            == (svc.namespace, svc.name)
        )
        self.controlplane.put(*svc.objects())
        self.services[(svc.namespace, svc.name)] = svc

    def remove_service(self, svc: ServiceHandle) -> None:
        self.controlplane.remove("Service", svc.namespace, svc.name)
        self.controlplane.remove_where(
            lambda o: o["kind"] == "EndpointSlice"
            and (o["metadata"].get("labels") or {}).get(model.SERVICE_NAME_LABEL) == svc.name
            and o["metadata"].get("namespace") == svc.namespace
        )
        self.services.pop((svc.namespace, svc.name), None)


@dataclass(eq=False)
class HostNetworkPod:
    """An echo server in ``node``'s own namespace, as a ``hostNetwork: true`` pod: its
    address is the node's. Publish it as an endpoint like a pod (``create_service``)."""

    name: str
    node: Node
    ports: list[tuple[int, str]]

    @property
    def netns(self) -> str:
        return self.node.netns

    @property
    def ip(self) -> str:
        return self.node.ip

    @property
    def addresses(self) -> list[str]:
        return list(self.node.addresses)

    @property
    def bind_addresses(self) -> list[str]:
        """What the echo server listens on: the node's lan address(es), the endpoint's,
        so that UDP answers leave from the address the client's flow was translated to."""
        return [a for a in self.node.addresses if a not in (self.node.pod_gateway, self.node.pod_gateway6)]

    def ip_of(self, family: int | str) -> str:
        return self.node.ip_of(family)


class ClusterScope:
    """What one test sees: the cluster's hosts and addresses, and the pods and Services the
    test creates (removed when it ends). Anything else is on ``env`` (``ClusterEnv``)."""

    def __init__(self, env: ClusterEnv) -> None:
        self.env = env
        self._pods: list[Pod] = []
        self._services: list[ServiceHandle] = []
        self._node_meta_before: dict[str, NodeMeta | None] = {}
        self._service_cidrs: list[str] = []
        self._host_pods: list[HostNetworkPod] = []

    # --- hosts and addresses (the env's) -------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        """The nodes, in order (``node1``, ``node2``, ...)."""
        return self.env.nodes

    @property
    def clients(self) -> list[Client]:
        """The hosts outside the cluster, on the lan."""
        return self.env.clients

    @property
    def client(self) -> Client:
        """The first client."""
        return self.env.client

    def node(self, name_or_index: str | int) -> Node:
        return self.env.node(name_or_index)

    @property
    def family(self) -> str:
        """The cluster's (primary) IP family: "IPv4" or "IPv6"."""
        return self.env.family

    @property
    def timing(self) -> Timing:
        return self.env.timing

    def external_ip(self, host: int) -> str:
        """Address ``host`` of the external-IP range (see ``ClusterEnv.external_ip``)."""
        return self.env.external_ip(host)

    def lb_ip(self, host: int) -> str:
        """Address ``host`` of the load-balancer ingress range."""
        return self.env.lb_ip(host)

    host_cidr = staticmethod(ClusterEnv.host_cidr)

    def new_node_port(self) -> int:
        """A nodePort no Service uses yet (for a test that changes one)."""
        return self.env.alloc.node_port()

    # --- this test's pods and Services ---------------------------------------------------

    def add_pod(self, node: Node | str | None = None,
                ports: Sequence[tuple[int, str]] = DEFAULT_POD_PORTS,
                name: str | None = None) -> Pod:
        """A pod running the echo server on ``ports``, on ``node`` (default: the node with
        the fewest pods)."""
        pod = self.env.add_pod(node, ports, name)
        self._pods.append(pod)
        return pod

    def add_pods(self, count: int, node: Node | str | None = None,
                 ports: Sequence[tuple[int, str]] = DEFAULT_POD_PORTS) -> list[Pod]:
        return [self.add_pod(node, ports) for _ in range(count)]

    @property
    def can_mark_node_deleting(self) -> bool:
        """Whether the control plane can give a Node a deletionTimestamp and take it back.
        kube-apiserver sets one only through a DELETE, which nothing undoes (and a finalizer
        released to end it deletes the Node, which makes kube-proxy exit)."""
        return self.env.control_plane != "kube-apiserver"

    @property
    def can_restart_control_plane(self) -> bool:
        """Whether the control plane has an API server to stop and start again
        (``--control-plane api`` or ``kube-apiserver``; not the state directory)."""
        return self.env.can_restart_control_plane

    def control_plane_down(self) -> Any:
        """A context manager: the API server is down inside the ``with`` block and back
        after it, with its objects (``ClusterEnv.control_plane_down``)."""
        return self.env.control_plane_down()

    def set_node_meta(self, node: Node | str, meta: NodeMeta, *, sync: bool = True) -> None:
        """Publish the node's Node object with ``meta`` (zone label, taints, deletion); the
        node's earlier state is restored when the test ends."""
        name = node if isinstance(node, str) else node.name
        self._node_meta_before.setdefault(name, self.env.node_meta.get(name))
        self.env.set_node_meta(node, meta, sync=sync)

    def add_host_network_pod(self, node: Node, ports: Sequence[tuple[int, str]] = ((8080, "tcp"), (8080, "udp"))
                             ) -> HostNetworkPod:
        """A hostNetwork pod on ``node``: the echo server listening on ``ports`` in the node's
        own namespace (all its addresses), stopped when the test ends."""
        echo = self.env.topology.echo
        if echo is None:
            raise RuntimeError("add_host_network_pod: this topology runs no echo server")
        pod = HostNetworkPod(f"hostnet{self.env.alloc.next_index('pod-name')}-{node.name}", node,
                             [(int(p), str(proto).lower()) for p, proto in ports])
        echo.add_pod(pod)
        self._host_pods.append(pod)
        return pod

    def remove_pod(self, pod: Pod) -> None:
        self.env.remove_pod(pod)
        self._pods = [p for p in self._pods if p.name != pod.name]

    @property
    def service_cidr(self) -> str:
        """The cluster's (primary family's) service CIDR, its default ServiceCIDR."""
        return str(self.env.topology.spec.service_cidr)

    def add_service_cidr(self, name: str, cidrs: Sequence[str]) -> None:
        """Publish a ``networking.k8s.io/v1`` ServiceCIDR (removed when the test ends) and
        wait until every proxier has applied it; Services may then take ClusterIPs from it
        (``create_service(..., cluster_ip=...)``)."""
        self.env.controlplane.put(model.service_cidr_object(name, cidrs))
        self._service_cidrs.append(name)
        self.env.sync()

    def plant_other_mode_rules(self, node: Node, objects: Iterable[dict[str, Any]]) -> str:
        """Write on ``node`` the rules kube-proxy's other mode (nftables for an iptables
        proxier, and the reverse) would have for ``objects`` (e.g. ``svc.objects()`` of a
        Service since deleted): what a node switched between modes still holds. Returns
        that mode's name (``harness.leftovers``)."""
        from harness import leftovers

        spec = self.env.topology.spec
        cidr = str(spec.cluster_cidr) + (f",{spec.cluster_cidr_v6}" if self.env.dual_stack else "")
        return leftovers.plant_other_mode_rules(node, leftovers.mode_in_use(node), objects,
                                                cluster_cidr=cidr, iptables_flavour=self.env.iptables)

    def create_service(self, endpoints: Iterable[Any] = (), **kw: Any) -> ServiceHandle:
        """Publish a Service and wait until every proxier has it (``ClusterEnv.create_service``)."""
        svc = self.env.create_service(endpoints, **kw)
        self._services.append(svc)
        return svc

    def close(self) -> None:
        """Remove this test's Services (one generation) and pods; tolerate what is gone."""
        live = [s for s in self._services if (s.namespace, s.name) in self.env.services]
        for svc in live:
            self.env.remove_service(svc)
        for name, meta in self._node_meta_before.items():
            self.env.set_node_meta(name, meta or NodeMeta(), sync=False)
        for name in self._service_cidrs:
            self.env.controlplane.remove("ServiceCIDR", "", name)
        if live or self._node_meta_before or self._service_cidrs:
            try:
                self.env.sync()
            except Exception:  # noqa: BLE001 - teardown must go on; the test already reported
                pass
        for pod in self._pods:
            try:
                self.env.remove_pod(pod)
            except Exception:  # noqa: BLE001
                pass
        for hpod in self._host_pods:
            try:
                if self.env.topology.echo is not None:
                    self.env.topology.echo.remove_pod(hpod.name)
            except Exception:  # noqa: BLE001
                pass


def wait_until(predicate: Any, timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
