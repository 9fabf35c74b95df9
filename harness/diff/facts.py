"""What a flow is about, read from a scenario document (pure).

``flow_facts(doc, flow)`` says where the flow leaves from (``src``: client, node, pod,
endpoint), what it aims at (``dest``: clusterip, nodeport, externalip, lb, unexposed,
other) and the properties of the Service it aims at that decide what a proxier does
(traffic policies, affinity, source ranges, ipMode, whether it has ready / serving
endpoints, whether one is on the flow's own node). Declared differences
(``harness.diff.declared``) are matched against these facts, and reports group by them.
"""

from __future__ import annotations

from typing import Any

from harness.diff.generate import CLIENT_PODS, NODES


def _services(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in doc.get("objects", []) if o.get("kind") == "Service"]


def _endpoints(doc: dict[str, Any], svc: str) -> list[dict[str, Any]]:
    return [ep for o in doc.get("objects", []) if o.get("kind") == "EndpointSlice"
            and o["metadata"].get("labels", {}).get("kubernetes.io/service-name") == svc
            for ep in o.get("endpoints") or []]


def target_service(doc: dict[str, Any], flow: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(destination kind, the Service) of a flow."""
    to, port, proto = flow["to"], flow["port"], flow.get("protocol", "TCP")
    nodes = {n for n, _, _ in NODES} | {ip for _, ip, _ in NODES}
    for svc in _services(doc):
        spec = svc["spec"]
        ports = [p for p in spec.get("ports", []) if p["protocol"] == proto]
        if to in nodes:
            if any(p.get("nodePort") == port for p in ports):
                return "nodeport", svc
            continue
        exposed = any(p["port"] == port for p in ports)
        lbs = [i.get("ip") for i in (svc.get("status") or {}).get("loadBalancer", {}).get("ingress", [])]
        if to == spec.get("clusterIP"):
            return ("clusterip" if exposed else "unexposed"), svc
        if to in spec.get("externalIPs", []) and exposed:
            return "externalip", svc
        if to in lbs and exposed:
            return "lb", svc
    return "other", None


def source_kind(doc: dict[str, Any], src: str) -> tuple[str, str | None]:
    """(client | node | pod | endpoint, the node it is on)."""
    for n, _, _ in NODES:
        if src == n:
            return "node", n
    for p, node, _ in CLIENT_PODS:
        if src == p:
            return "pod", node
    for o in doc.get("objects", []):
        if o.get("kind") == "EndpointSlice":
            for ep in o.get("endpoints") or []:
                if (ep.get("targetRef") or {}).get("name") == src:
                    return "endpoint", ep.get("nodeName")
    return "client", None


def flow_facts(doc: dict[str, Any], flow: dict[str, Any]) -> dict[str, Any]:
    """The facts of one flow (a flat dict of strings and booleans)."""
    dest, svc = target_service(doc, flow)
    src, src_node = source_kind(doc, flow["from"])
    facts: dict[str, Any] = {"src": src, "dest": dest, "protocol": flow.get("protocol", "TCP")}
    if svc is None:
        return facts
    spec = svc["spec"]
    eps = _endpoints(doc, svc["metadata"]["name"])
    ready = [e for e in eps if e["conditions"].get("ready")]
    serving = [e for e in eps if e["conditions"].get("serving")]
    facts.update({
        "type": spec.get("type", "ClusterIP"),
        "etp": spec.get("externalTrafficPolicy", "Cluster"),
        "itp": spec.get("internalTrafficPolicy", "Cluster"),
        "affinity": spec.get("sessionAffinity") == "ClientIP",
        "source_ranges": bool(spec.get("loadBalancerSourceRanges")),
        "ipmode": next((i.get("ipMode", "VIP") for i in (svc.get("status") or {})
                        .get("loadBalancer", {}).get("ingress", []) if i.get("ip") == flow["to"]),
                       None),
        "endpoints": len(eps),
        "ready": len(ready),
        "serving": len(serving),
        "local_ready": src_node is not None and any(e.get("nodeName") == src_node for e in ready),
        "to_itself": src == "endpoint" and any(
            (e.get("targetRef") or {}).get("name") == flow["from"] for e in eps),
    })
    return facts


def candidates(doc: dict[str, Any], flow: dict[str, Any]) -> int:
    """How many endpoint addresses the flow's Service lists (whatever their conditions)."""
    _, svc = target_service(doc, flow)
    return len(_endpoints(doc, svc["metadata"]["name"])) if svc is not None else 0
