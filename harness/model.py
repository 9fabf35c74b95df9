"""Builders for the Kubernetes objects a test publishes (Service, EndpointSlice, Node).

Objects are built with lightkube's typed models and handed on as plain dicts, shaped exactly
as ``kubectl get -o yaml`` prints them; reading them back is ``servicemodel``'s job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightkube.models.core_v1 import (
    ClientIPConfig,
    LoadBalancerIngress,
    LoadBalancerStatus,
    NodeAddress,
    NodeSpec,
    NodeStatus,
    ServicePort,
    ServiceSpec,
    ServiceStatus,
    SessionAffinityConfig,
    Taint,
)
from lightkube.models.discovery_v1 import (
    Endpoint,
    EndpointConditions,
    EndpointHints,
    EndpointPort,
    ForNode,
    ForZone,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from servicemodel.names import SERVICE_NAME_LABEL


@dataclass
class PortSpec:
    """One Service port. ``target_port`` may be a number or the name of a container port."""

    port: int
    target_port: int | str | None = None
    protocol: str = "TCP"
    name: str = ""
    node_port: int | None = None

    @property
    def proto(self) -> str:
        return self.protocol.lower()


@dataclass
class EndpointSpec:
    """One endpoint address of an EndpointSlice, with its conditions."""

    ip: str
    node: str | None = None
    ready: bool | None = True
    serving: bool | None = None
    terminating: bool | None = None
    pod: str | None = None
    #: endpoint.zone (the EndpointSlice controller copies its node's zone label)
    zone: str | None = None
    #: hints.forZones / hints.forNodes; None writes no hints (see harness.trafficdist)
    for_zones: tuple[str, ...] | None = None
    for_nodes: tuple[str, ...] | None = None


@dataclass
class SliceSpec:
    """An EndpointSlice: endpoints plus the ports (name, number, protocol) they listen on."""

    name: str
    endpoints: list[EndpointSpec]
    ports: list[tuple[str, int, str]]
    address_type: str = "IPv4"
    #: labels beyond kubernetes.io/service-name and managed-by (e.g. service.kubernetes.io/headless)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ServiceSpecIn:
    """What a test says about a Service; ``service_object`` turns it into the API object."""

    name: str
    namespace: str
    ports: list[PortSpec]
    cluster_ip: str | None = None
    type: str = "ClusterIP"
    affinity_timeout: int | None = None  # seconds; None = no session affinity
    external_traffic_policy: str | None = None
    internal_traffic_policy: str | None = None
    external_ips: list[str] = field(default_factory=list)
    load_balancer_ips: list[str] = field(default_factory=list)
    source_ranges: list[str] = field(default_factory=list)
    health_check_node_port: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: every clusterIP, primary (= ``cluster_ip``) first: two families make a dual-stack
    #: Service (``ipFamilyPolicy: RequireDualStack``); empty means ``[cluster_ip]``
    cluster_ips: list[str] = field(default_factory=list)
    #: type ExternalName: the DNS name (the Service then has no clusterIP)
    external_name: str | None = None
    #: type LoadBalancer: False publishes ``allocateLoadBalancerNodePorts: false`` (no
    #: nodePorts); None leaves the field unset
    allocate_load_balancer_node_ports: bool | None = None
    #: spec.trafficDistribution (PreferClose, PreferSameZone, PreferSameNode); the harness,
    #: as the EndpointSlice controller, writes the hints it implies (harness.trafficdist)
    traffic_distribution: str | None = None
    #: status.loadBalancer.ingress[].ipMode: "VIP" (also the default here), "Proxy", or ""
    #: to leave the field unset
    lb_ip_mode: str = "VIP"


def family_of(ip: str) -> str:
    return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"


def service_object(spec: ServiceSpecIn) -> dict[str, Any]:
    affinity = None
    affinity_config = None
    if spec.affinity_timeout is not None:
        affinity = "ClientIP"
        affinity_config = SessionAffinityConfig(
            clientIP=ClientIPConfig(timeoutSeconds=spec.affinity_timeout)
        )
    ports = [
        ServicePort(
            name=p.name or None,
            port=p.port,
            targetPort=p.target_port if p.target_port is not None else p.port,
            protocol=p.protocol,
            nodePort=p.node_port if spec.type in ("NodePort", "LoadBalancer") else None,
        )
        for p in spec.ports
    ]
    status = None
    if spec.load_balancer_ips:
        status = ServiceStatus(
            loadBalancer=LoadBalancerStatus(
                ingress=[LoadBalancerIngress(ip=ip, ipMode=spec.lb_ip_mode or None)
                         for ip in spec.load_balancer_ips]
            )
        )
    external_name = spec.type == "ExternalName"
    cluster_ips = [] if external_name else (spec.cluster_ips or ([spec.cluster_ip] if spec.cluster_ip else []))
    families = [family_of(ip) for ip in cluster_ips] or ["IPv4"]
    svc = Service(
        metadata=ObjectMeta(name=spec.name, namespace=spec.namespace, labels=spec.labels or None),
        spec=ServiceSpec(
            type=spec.type,
            clusterIP=None if external_name else spec.cluster_ip,
            clusterIPs=cluster_ips or None,
            ipFamilies=None if external_name else families,
            ipFamilyPolicy=None if external_name else (
                "SingleStack" if len(families) == 1 else "RequireDualStack"),
            externalName=spec.external_name if external_name else None,
            allocateLoadBalancerNodePorts=(spec.allocate_load_balancer_node_ports
                                           if spec.type == "LoadBalancer" else None),
            ports=ports,
            sessionAffinity=affinity or "None",
            sessionAffinityConfig=affinity_config,
            externalTrafficPolicy=(
                (spec.external_traffic_policy or "Cluster")
                if spec.type in ("NodePort", "LoadBalancer")
                else None
            ),
            internalTrafficPolicy=None if external_name else (spec.internal_traffic_policy or "Cluster"),
            externalIPs=spec.external_ips or None,
            loadBalancerSourceRanges=spec.source_ranges or None,
            healthCheckNodePort=spec.health_check_node_port,
            trafficDistribution=spec.traffic_distribution,
        ),
        status=status,
    )
    return svc.to_dict()


def endpoint_slice_object(service: str, namespace: str, spec: SliceSpec) -> dict[str, Any]:
    endpoints = [
        Endpoint(
            addresses=[e.ip],
            nodeName=e.node,
            conditions=EndpointConditions(ready=e.ready, serving=e.serving, terminating=e.terminating),
            zone=e.zone,
            hints=_hints(e),
        )
        for e in spec.endpoints
    ]
    ports = [EndpointPort(name=name, port=port, protocol=proto.upper()) for name, port, proto in spec.ports]
    es = EndpointSlice(
        addressType=spec.address_type,
        metadata=ObjectMeta(
            name=spec.name,
            namespace=namespace,
            labels={**spec.labels, SERVICE_NAME_LABEL: service,
                    "endpointslice.kubernetes.io/managed-by": "svc-conformance"},
        ),
        endpoints=endpoints,
        ports=ports,
    )
    return es.to_dict()


def _hints(e: EndpointSpec) -> EndpointHints | None:
    if e.for_zones is None and e.for_nodes is None:
        return None
    return EndpointHints(
        forZones=[ForZone(name=z) for z in e.for_zones] if e.for_zones is not None else None,
        forNodes=[ForNode(name=n) for n in e.for_nodes] if e.for_nodes is not None else None,
    )


@dataclass
class NodeMeta:
    """What a test may change on a Node: labels (``topology.kubernetes.io/zone``), taint keys
    (effect NoSchedule, as the cluster autoscaler's ``ToBeDeletedByClusterAutoscaler``) and
    a deletionTimestamp (the node is being deleted)."""

    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[str, ...] = ()
    deletion_timestamp: str | None = None


def node_object(name: str, addresses: Sequence[str], pod_cidr: str | None = None,
                pod_cidrs: Sequence[str] = (), meta: NodeMeta | None = None) -> dict[str, Any]:
    """A Node; ``pod_cidrs`` (dual-stack) lists every pod CIDR, ``pod_cidr`` first."""
    cidrs = list(pod_cidrs) or ([pod_cidr] if pod_cidr else [])
    meta = meta or NodeMeta()
    node = Node(
        metadata=ObjectMeta(name=name, labels=dict(meta.labels) or None,
                            deletionTimestamp=meta.deletion_timestamp,
                            # a Node being deleted is held by a finalizer, as the API requires
                            finalizers=["svc-conformance/test"] if meta.deletion_timestamp else None),
        spec=NodeSpec(podCIDR=pod_cidr, podCIDRs=cidrs or None,
                      taints=[Taint(key=k, effect="NoSchedule") for k in meta.taints] or None),
        status=NodeStatus(addresses=[NodeAddress(type="InternalIP", address=a) for a in addresses]),
    )
    return node.to_dict()


def service_cidr_object(name: str, cidrs: Sequence[str]) -> dict[str, Any]:
    """A ``networking.k8s.io/v1`` ServiceCIDR, Ready, as the API server keeps its default one
    (``kubernetes``); nftables-mode kube-proxy reads them to drop unallocated ClusterIPs."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": name},
        "spec": {"cidrs": list(cidrs)},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "",
                                   "message": "Kubernetes Service CIDR is ready",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    }


def slice_ports_for(service_ports: Iterable[PortSpec], pod_port_names: dict[str, int] | None = None
                    ) -> list[tuple[str, int, str]]:
    """EndpointSlice ports for a Service's ports: each named like the Service port, numbered
    by its targetPort (a named targetPort is looked up in ``pod_port_names``)."""
    out = []
    for p in service_ports:
        target = p.target_port if p.target_port is not None else p.port
        if isinstance(target, str):
            if not pod_port_names or target not in pod_port_names:
                raise ValueError(f"targetPort {target!r} of port {p.name!r} names no pod port")
            target = pod_port_names[target]
        out.append((p.name, int(target), p.protocol))
    return out
