"""Compact builders for Services and EndpointSlices, and kube-proxy's test proxier config.

The config mirrors ``NewFakeProxier`` in kube-proxy's proxier_test.go: node test-node at
192.168.0.2, pods 10.0.0.0/8 (fd00:10::/64), nfacct counters present, no --random-fully.
"""

from __future__ import annotations

from typing import Any

from lightkube.codecs import from_dict

from refproxier.config import ProxierConfig
from refproxier.proxystate import ProxyState, build_proxy_state
from servicemodel.cluster import ClusterState

NODE = "test-node"
NODE_IP = "192.168.0.2"
NODE_IPS = ("192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2")


def fake_config(ip_family: int = 4, **kw: Any) -> ProxierConfig:
    base: dict[str, Any] = dict(
        hostname=NODE,
        node_ips=(NODE_IP, "2001:db8::1"),
        ip_family=ip_family,
        cluster_cidrs=("10.0.0.0/8",) if ip_family == 4 else ("fd00:10::/64",),
        random_fully=False,
        nfacct=True,
        local_addresses=NODE_IPS,
    )
    base.update(kw)
    return ProxierConfig(**base)


def port(name: str = "p80", port: int = 80, protocol: str = "TCP", node_port: int | None = None) -> dict:
    p: dict[str, Any] = {"name": name, "port": port, "protocol": protocol, "targetPort": port}
    if node_port:
        p["nodePort"] = node_port
    return p


def service(
    ns: str,
    name: str,
    cluster_ip: str,
    ports: list[dict] | None = None,
    *,
    type: str = "ClusterIP",
    etp: str | None = None,
    itp: str | None = None,
    external_ips: list[str] | None = None,
    lb_ips: list[str] | None = None,
    lb_ingress: list[dict] | None = None,
    source_ranges: list[str] | None = None,
    hcnp: int | None = None,
    affinity: int | None = None,
    labels: dict[str, str] | None = None,
    cluster_ips: list[str] | None = None,
) -> dict:
    spec: dict[str, Any] = {"type": type, "clusterIP": cluster_ip, "ports": ports or [port()]}
    if cluster_ips:
        spec["clusterIPs"] = cluster_ips
    if etp:
        spec["externalTrafficPolicy"] = etp
    if itp:
        spec["internalTrafficPolicy"] = itp
    if external_ips:
        spec["externalIPs"] = external_ips
    if source_ranges:
        spec["loadBalancerSourceRanges"] = source_ranges
    if hcnp:
        spec["healthCheckNodePort"] = hcnp
    if affinity is not None:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": affinity}}
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": spec,
    }
    ingress = list(lb_ingress or []) + [{"ip": ip} for ip in lb_ips or []]
    if ingress:
        obj["status"] = {"loadBalancer": {"ingress": ingress}}
    return obj


def ep(
    ip: str,
    node: str | None = None,
    *,
    ready: bool | None = None,
    serving: bool | None = None,
    terminating: bool | None = None,
    zones: list[str] | None = None,
) -> dict:
    cond = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating)) if v is not None}
    e: dict[str, Any] = {"addresses": [ip], "conditions": cond}
    if node:
        e["nodeName"] = node
    if zones:
        e["hints"] = {"forZones": [{"name": z} for z in zones]}
    return e


def eps_slice(
    ns: str,
    svc: str,
    endpoints: list[dict],
    ports: list[dict] | None = None,
    *,
    suffix: str = "1",
    address_type: str = "IPv4",
    labels: dict[str, str] | None = None,
) -> dict:
    lab = {"kubernetes.io/service-name": svc}
    lab.update(labels or {})
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{svc}-{suffix}", "namespace": ns, "labels": lab},
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports if ports is not None else [{"name": "p80", "port": 80, "protocol": "TCP"}],
    }


def node(name: str, zone: str | None = None) -> dict:
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def cluster(*objs: dict, generation: int | None = None) -> ClusterState:
    return ClusterState.from_objects([from_dict(o) for o in objs], generation=generation)


def proxy_state(*objs: dict, config: ProxierConfig | None = None) -> ProxyState:
    return build_proxy_state(cluster(*objs), config or fake_config())
