"""Delta debugging over a scenario document: the smallest cluster and flow that still
disagree (pure: the re-run is the caller's ``still_disagrees``).

``reductions(doc, flow)`` yields smaller documents, coarse first: the one flow alone,
then without each other Service, each EndpointSlice, each endpoint, each Service port the
flow does not use, each optional field (external IPs and load-balancer IPs the flow does
not aim at, source ranges, affinity, traffic policies), endpoints made plainly ready.
Each stays a document the API server would accept and the scenario loader loads (the
others are skipped). ``shrink`` takes the first reduction that still disagrees and starts
over, until none does or its run budget is spent (hypothesis's own shrinker would need
hundreds of cluster runs; a run costs seconds here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from harness.diff.facts import source_kind, target_service
from harness.diff.generate import CLIENT_PODS, document_text
from harness.scenario import ScenarioError, parse_scenario

Doc = dict[str, Any]


def _objects(doc: Doc, kind: str) -> list[tuple[int, dict[str, Any]]]:
    return [(i, o) for i, o in enumerate(doc["objects"]) if o.get("kind") == kind]


def _slices_of(doc: Doc, svc: str) -> list[dict[str, Any]]:
    return [o for _, o in _objects(doc, "EndpointSlice")
            if o["metadata"]["labels"].get("kubernetes.io/service-name") == svc]


def _without(doc: Doc, drop: Callable[[dict[str, Any]], bool]) -> Doc:
    out = copy.deepcopy(doc)
    out["objects"] = [o for o in out["objects"] if not drop(o)]
    return out


def _edit(doc: Doc, index: int, change: Callable[[dict[str, Any]], None]) -> Doc:
    out = copy.deepcopy(doc)
    change(out["objects"][index])
    return out


def reductions(doc: Doc, flow_name: str) -> Iterator[tuple[str, Doc]]:
    """(what was removed, the smaller document), coarse first."""
    flow = next(f for f in doc["flows"] if f["name"] == flow_name)
    if len(doc["flows"]) > 1:
        yield "the other flows", {**copy.deepcopy(doc), "flows": [copy.deepcopy(flow)]}
    _, target = target_service(doc, flow)
    tname = target["metadata"]["name"] if target else None
    for _, svc in _objects(doc, "Service"):
        name = svc["metadata"]["name"]
        if name != tname:
            yield f"Service {name}", _without(doc, lambda o, n=name: o["metadata"]["name"] == n
                                              or o["metadata"].get("labels", {}).get(
                                                  "kubernetes.io/service-name") == n)
    for i, sl in _objects(doc, "EndpointSlice"):
        sname = sl["metadata"]["name"]
        yield f"EndpointSlice {sname}", _without(
            doc, lambda o, n=sname: o["kind"] == "EndpointSlice" and o["metadata"]["name"] == n)
        for j in range(len(sl["endpoints"])):
            yield (f"endpoint {j} of {sl['metadata']['name']}",
                   _edit(doc, i, lambda o, j=j: o["endpoints"].pop(j)))
    for ti, _ in _objects(doc, "Service"):
        yield from _port_reductions(doc, ti, flow)
        yield from _field_reductions(doc, ti, flow)
        yield from _type_reductions(doc, ti, flow)
    yield from _source_reductions(doc, flow)
    for i, sl in _objects(doc, "EndpointSlice"):
        for j, ep in enumerate(sl["endpoints"]):
            if ep["conditions"] != {"ready": True, "serving": True, "terminating": False}:
                yield (f"conditions of endpoint {j} of {sl['metadata']['name']}",
                       _edit(doc, i, lambda o, j=j: o["endpoints"][j].update(
                           conditions={"ready": True, "serving": True, "terminating": False})))


def _port_reductions(doc: Doc, ti: int, flow: dict[str, Any]) -> Iterator[tuple[str, Doc]]:
    svc = doc["objects"][ti]
    ports = svc["spec"].get("ports", [])
    used = [p for p in ports if p["protocol"] == flow.get("protocol", "TCP")
            and flow["port"] in (p["port"], p.get("nodePort"))]
    if len(ports) < 2:
        return
    for p in ports:
        if p in used:
            continue

        def drop(o: dict[str, Any], name: str = p["name"]) -> None:
            if o.get("kind") == "Service":
                o["spec"]["ports"] = [q for q in o["spec"]["ports"] if q["name"] != name]
            else:
                o["ports"] = [q for q in o["ports"] if q["name"] != name]
        out = _edit(doc, ti, drop)
        for sl in _slices_of(out, svc["metadata"]["name"]):
            drop(sl)
        yield f"port {p['name']} of {svc['metadata']['name']}", out


def _field_reductions(doc: Doc, ti: int, flow: dict[str, Any]) -> Iterator[tuple[str, Doc]]:
    spec = doc["objects"][ti]["spec"]
    name = doc["objects"][ti]["metadata"]["name"]
    if spec.get("externalIPs") and flow["to"] not in spec["externalIPs"]:
        def no_external_ips(o: dict[str, Any]) -> None:
            o["spec"].pop("externalIPs")
            if o["spec"]["type"] == "ClusterIP":  # the API allows the policy only with them
                o["spec"].pop("externalTrafficPolicy", None)
        yield f"externalIPs of {name}", _edit(doc, ti, no_external_ips)
    lb = doc["objects"][ti].get("status", {}).get("loadBalancer", {}).get("ingress", [])
    if lb and all(i.get("ip") != flow["to"] for i in lb):
        yield f"load-balancer IPs of {name}", _edit(doc, ti, lambda o: o.pop("status"))
    if spec.get("loadBalancerSourceRanges"):
        yield f"source ranges of {name}", _edit(
            doc, ti, lambda o: o["spec"].pop("loadBalancerSourceRanges"))
    if spec.get("sessionAffinity") == "ClientIP":
        def no_affinity(o: dict[str, Any]) -> None:
            o["spec"]["sessionAffinity"] = "None"
            o["spec"].pop("sessionAffinityConfig", None)
        yield f"affinity of {name}", _edit(doc, ti, no_affinity)
    if spec.get("externalTrafficPolicy") == "Local":
        def etp_cluster(o: dict[str, Any]) -> None:
            o["spec"]["externalTrafficPolicy"] = "Cluster"
            o["spec"].pop("healthCheckNodePort", None)  # only with Local
        yield f"externalTrafficPolicy Local of {name}", _edit(doc, ti, etp_cluster)
    if spec.get("internalTrafficPolicy") == "Local":
        yield f"internalTrafficPolicy Local of {name}", _edit(
            doc, ti, lambda o: o["spec"].update(internalTrafficPolicy="Cluster"))


def _type_reductions(doc: Doc, ti: int, flow: dict[str, Any]) -> Iterator[tuple[str, Doc]]:
    """LoadBalancer -> NodePort -> ClusterIP, unless the flow aims at what goes away."""
    svc = doc["objects"][ti]
    spec, name = svc["spec"], svc["metadata"]["name"]
    kind = target_service(doc, flow)[0] if target_service(doc, flow)[1] is svc else None
    if spec.get("type") == "LoadBalancer" and kind != "lb":
        def to_node_port(o: dict[str, Any]) -> None:
            o["spec"]["type"] = "NodePort"
            for k in ("loadBalancerSourceRanges", "healthCheckNodePort"):
                o["spec"].pop(k, None)
            o.pop("status", None)
        yield f"type LoadBalancer of {name} (now NodePort)", _edit(doc, ti, to_node_port)
    if spec.get("type") == "NodePort" and kind != "nodeport":
        def to_cluster_ip(o: dict[str, Any]) -> None:
            o["spec"]["type"] = "ClusterIP"
            for p in o["spec"]["ports"]:
                p.pop("nodePort", None)
            if not o["spec"].get("externalIPs"):
                o["spec"].pop("externalTrafficPolicy", None)
        yield f"type NodePort of {name} (now ClusterIP)", _edit(doc, ti, to_cluster_ip)


def _source_reductions(doc: Doc, flow: dict[str, Any]) -> Iterator[tuple[str, Doc]]:
    """A flow from an endpoint pod, sent from the plain client pod of its node instead."""
    kind, node = source_kind(doc, flow["from"])
    if kind != "endpoint":
        return
    for pod, pnode, _ in CLIENT_PODS:
        if pnode == node:
            out = copy.deepcopy(doc)
            for f in out["flows"]:
                if f["name"] == flow["name"]:
                    f["from"] = pod
            yield f"source {flow['from']} (now {pod}, on the same node)", out


def loads(doc: Doc) -> bool:
    """The document loads as a scenario (a reduction may orphan a flow's host)."""
    try:
        parse_scenario(document_text(doc), "<shrinking>")
    except ScenarioError:
        return False
    return True


def shrink(doc: Doc, flow_name: str, still_disagrees: Callable[[Doc], bool],
           max_runs: int = 30, stop: Callable[[], bool] = lambda: False,
           ) -> tuple[Doc, list[str], int]:
    """The smallest document found that still disagrees on ``flow_name``: (document, what
    was removed in order, runs spent). Stops after ``max_runs`` tests or when ``stop()``."""
    removed: list[str] = []
    runs = 0
    progress = True
    while progress and runs < max_runs:
        progress = False
        for what, cand in reductions(doc, flow_name):
            if not loads(cand):
                continue
            if runs >= max_runs or stop():
                progress = False
                break
            runs += 1
            if still_disagrees(cand):
                doc, progress = cand, True
                removed.append(what)
                break
    return doc, removed, runs
