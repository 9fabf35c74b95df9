"""Random but valid cluster states and flows, as scenario documents (hypothesis strategies).

A case is a plain dict in the scenario format (``harness.scenario``): ``objects`` (v1
Services, discovery.k8s.io/v1 EndpointSlices), a fixed ``topology`` (two nodes, one client
outside, one extra pod per node) and ``flows`` whose ``expect`` is a placeholder (``drop``):
the differential runner observes outcomes instead of checking them, and a shrunk case is
written back with the observed outcome as its expectation (``harness.diff.write``).

Only what the API server accepts is generated: clusterIPs in the Service CIDR and unique,
nodePorts in 30000-32767 and unique (healthCheckNodePort too, for LoadBalancer with
externalTrafficPolicy Local), port names unique and present when a Service has several,
(port, protocol) pairs unique, ``externalTrafficPolicy`` only on externally reachable
Services, ``loadBalancerSourceRanges`` only on LoadBalancers, ``sessionAffinityConfig``
only with ClientIP, endpoint conditions as the EndpointSlice controller sets them (ready
implies serving and not terminating), slice ports named as their Service's ports.

``generate_cases(seed, n)`` draws ``n`` documents reproducibly from ``seed``.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

NODES = (("node-a", "192.0.2.11", "10.244.1.0/24"), ("node-b", "192.0.2.12", "10.244.2.0/24"))
CLIENT = ("client", "192.0.2.101")
#: pods that are no endpoint: a client pod on each node
CLIENT_PODS = (("pod-a", "node-a", "10.244.1.200"), ("pod-b", "node-b", "10.244.2.200"))
SERVICE_PORTS = (80, 443, 53, 8080)
TARGET_PORTS = (8080, 9376, 5001)
#: a port no generated Service exposes (the "unexposed port" destination)
UNEXPOSED_PORT = 7777
#: endpoint conditions (ready, serving, terminating) the EndpointSlice controller writes
CONDITIONS = ((True, True, False), (False, False, False), (False, True, True), (False, False, True))
SOURCE_RANGES = ("192.0.2.101/32", "192.0.2.0/24", "198.51.100.0/24", "10.244.0.0/16")
MAX_FLOWS = 10
MIN_FLOWS = 4


def topology() -> dict[str, Any]:
    """The fixed test network of every case."""
    return {
        "client_gateway": "node-a",
        "nodes": [{"name": n, "ip": ip, "pod_cidr": cidr} for n, ip, cidr in NODES],
        "clients": [{"name": CLIENT[0], "ip": CLIENT[1], "extra_addresses": 0}],
        "pods": [{"name": n, "node": node, "ip": ip} for n, node, ip in CLIENT_PODS],
    }


@st.composite
def _ports(draw: Any, with_node_ports: bool, node_ports: list[int]) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 3))
    pairs = draw(st.lists(st.tuples(st.sampled_from(SERVICE_PORTS), st.sampled_from(("TCP", "UDP"))),
                          min_size=n, max_size=n, unique=True))
    out = []
    for i, (port, proto) in enumerate(pairs):
        p: dict[str, Any] = {"name": f"p{i}-{proto.lower()}" if n > 1 else "", "port": port,
                             "protocol": proto, "targetPort": draw(st.sampled_from(TARGET_PORTS))}
        if with_node_ports:
            p["nodePort"] = _fresh_node_port(draw, node_ports)
        out.append(p)
    return out


def _fresh_node_port(draw: Any, used: list[int]) -> int:
    port = draw(st.integers(30000, 32767).filter(lambda x: x not in used))
    used.append(port)
    return port


@st.composite
def service(draw: Any, index: int, node_ports: list[int]) -> dict[str, Any]:
    """One Service (``svc-<index>``, clusterIP 10.96.<index+1>.10) of any type."""
    kind = draw(st.sampled_from(("ClusterIP", "ClusterIP", "NodePort", "LoadBalancer",
                                 "LoadBalancer", "Headless", "ExternalName")))
    name = f"svc-{index}"
    meta = {"name": name, "namespace": "default"}
    if kind == "ExternalName":  # no clusterIP; proxiers must ignore it
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                "spec": {"type": "ExternalName", "externalName": "example.invalid"}}
    spec: dict[str, Any] = {"type": "ClusterIP" if kind == "Headless" else kind,
                            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}
    ip = "None" if kind == "Headless" else f"10.96.{index + 1}.10"
    spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
    spec["ports"] = draw(_ports(kind in ("NodePort", "LoadBalancer"), node_ports))
    status: dict[str, Any] = {}
    if kind != "Headless":
        if draw(st.integers(0, 3)) == 0:
            spec["externalIPs"] = [f"198.51.100.{index + 10}"]
        if kind in ("NodePort", "LoadBalancer") or "externalIPs" in spec:
            spec["externalTrafficPolicy"] = draw(st.sampled_from(("Cluster", "Local")))
        spec["internalTrafficPolicy"] = draw(st.sampled_from(("Cluster", "Cluster", "Local")))
        if draw(st.integers(0, 2)) == 0:
            spec["sessionAffinity"] = "ClientIP"
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": draw(
                st.sampled_from((10800, 60, 86400)))}}
        else:
            spec["sessionAffinity"] = "None"
    if kind == "LoadBalancer":
        if spec.get("externalTrafficPolicy") == "Local":
            spec["healthCheckNodePort"] = _fresh_node_port(draw, node_ports)
        if draw(st.booleans()):
            spec["loadBalancerSourceRanges"] = draw(st.lists(st.sampled_from(SOURCE_RANGES),
                                                             min_size=1, max_size=2, unique=True))
        if draw(st.integers(0, 4)):
            ingress = {"ip": f"203.0.113.{index + 10}",
                       "ipMode": draw(st.sampled_from(("VIP", "VIP", "Proxy")))}
            status = {"loadBalancer": {"ingress": [ingress]}}
    out = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
    if status:
        out["status"] = status
    return out


@st.composite
def endpoint_slice(draw: Any, svc: dict[str, Any], index: int) -> dict[str, Any]:
    """The Service's EndpointSlice: 0-4 endpoints on either node, any conditions."""
    name = svc["metadata"]["name"]
    n = draw(st.integers(0, 4))
    endpoints = []
    for i in range(n):
        node = draw(st.integers(0, 1))
        ready, serving, terminating = draw(st.sampled_from(CONDITIONS))
        endpoints.append({
            "addresses": [f"10.244.{node + 1}.{10 + 10 * index + i}"],
            "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            "nodeName": NODES[node][0],
            "targetRef": {"kind": "Pod", "name": f"{name}-ep{i}", "namespace": "default"},
        })
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-abcde", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": p["name"], "port": p["targetPort"], "protocol": p["protocol"]}
                      for p in svc["spec"].get("ports", [])]}


def destinations(objects: list[dict[str, Any]]) -> list[tuple[str, str, int, str]]:
    """Every (kind, to, port, protocol) a flow can aim at: ClusterIP, each node's nodePort,
    external IP, LB ingress IP, and an unexposed port of each ClusterIP."""
    out = []
    for o in objects:
        if o["kind"] != "Service" or o["spec"].get("clusterIP") in (None, "None"):
            continue
        spec = o["spec"]
        for p in spec.get("ports", []):
            port, proto = p["port"], p["protocol"]
            out.append(("clusterip", spec["clusterIP"], port, proto))
            if "nodePort" in p:
                out += [("nodeport", n, p["nodePort"], proto) for n, _, _ in NODES]
            out += [("externalip", ip, port, proto) for ip in spec.get("externalIPs", [])]
            out += [("lb", ing["ip"], port, proto)
                    for ing in (o.get("status") or {}).get("loadBalancer", {}).get("ingress", [])]
        proto = spec["ports"][0]["protocol"] if spec.get("ports") else "TCP"
        out.append(("unexposed", spec["clusterIP"], UNEXPOSED_PORT, proto))
    return out


def sources(objects: list[dict[str, Any]]) -> list[str]:
    """Every host a flow can leave from: the client, each node, each client pod, and every
    endpoint pod."""
    eps = [ep["targetRef"]["name"] for o in objects if o["kind"] == "EndpointSlice"
           for ep in o["endpoints"]]
    return [CLIENT[0], *(n for n, _, _ in NODES), *(p for p, _, _ in CLIENT_PODS), *eps]


@st.composite
def case(draw: Any) -> dict[str, Any]:
    """One scenario document: 1-3 Services with their slices (sometimes none), flows."""
    node_ports: list[int] = []
    objects: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 3))):
        svc = draw(service(i, node_ports))
        objects.append(svc)
        if svc["spec"].get("clusterIP") not in (None, "None") and draw(st.integers(0, 5)):
            objects.append(draw(endpoint_slice(svc, i)))
    dests = destinations(objects)
    srcs = sources(objects)
    # at least a few flows per case: a cluster costs seconds to start, a flow a fraction
    least = min(MIN_FLOWS, len(srcs) * len(dests))
    picks = draw(st.lists(st.tuples(st.sampled_from(srcs), st.sampled_from(dests)),
                          min_size=least, max_size=MAX_FLOWS, unique=True)) if dests else []
    flows = [{"name": f"f{i}: {src} to {kind} {to}:{port}/{proto}", "from": src,
              "protocol": proto, "to": to, "port": port, "expect": "drop"}
             for i, (src, (kind, to, port, proto)) in enumerate(picks)]
    return {"description": "A generated case (harness.diff).", "objects": objects,
            "topology": topology(), "flows": flows}


def generate_cases(seed: int, n: int) -> list[dict[str, Any]]:
    """``n`` case documents drawn reproducibly from ``seed`` (hypothesis's generation only:
    shrinking is ours, over real runs). Cases without flows are left out."""
    out: list[dict[str, Any]] = []

    @hseed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case())
    def collect(doc: dict[str, Any]) -> None:
        if doc["flows"]:
            out.append(doc)

    collect()
    return out


def document_text(doc: dict[str, Any]) -> str:
    """A document as scenario YAML (keys in the order written)."""
    return yaml.safe_dump(doc, sort_keys=False, width=100)
