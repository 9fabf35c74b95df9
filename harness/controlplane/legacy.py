"""Older API versions served from the same objects, for older proxiers.

kube-proxy read Endpoints (v1) up to 1.18, discovery.k8s.io/v1beta1 EndpointSlices in
1.19 to 1.21 (the EndpointSliceProxying gate, beta and on by default from 1.19), and
discovery.k8s.io/v1 from 1.22 (each release's ``cmd/kube-proxy/app/server.go``). The
harness publishes v1 EndpointSlices only; on every publish the API server derives:

- each slice as ``discovery.k8s.io/v1beta1``: ``nodeName`` and ``zone`` also as the
  ``topology`` labels ``kubernetes.io/hostname`` and ``topology.kubernetes.io/zone``
  (1.19 reads which endpoints are local from ``topology``), ``deprecatedTopology`` merged in;
- per Service, the ``Endpoints`` object the endpoints controller would write: one subset
  per slice, ready endpoints as ``addresses`` and the others as ``notReadyAddresses``.

Derived objects get their own resourceVersions and watch events, like the real API's.
"""

from __future__ import annotations

import copy
from typing import Any

V1BETA1 = "discovery.k8s.io/v1beta1"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# (group version path, plural) -> (kind, apiVersion, namespaced), as apiserver.RESOURCES
LEGACY_RESOURCES: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("apis/discovery.k8s.io/v1beta1", "endpointslices"): ("EndpointSlice", V1BETA1, True),
    ("api/v1", "endpoints"): ("Endpoints", "v1", True),
}
# a legacy version of a kind the current API also serves is stored under its own key kind
_STORE_KINDS = {("EndpointSlice", V1BETA1): f"EndpointSlice@{V1BETA1}"}


def store_kind(kind: str, api_version: str) -> str:
    """The key kind an object of ``api_version`` is stored under: its kind, or
    ``kind@apiVersion`` for a legacy version of a kind the current API serves too."""
    return _STORE_KINDS.get((kind, api_version), kind)


def endpointslice_v1beta1(obj: dict[str, Any]) -> dict[str, Any]:
    """A discovery.k8s.io/v1 EndpointSlice as v1beta1."""
    out = copy.deepcopy(obj)
    out["apiVersion"] = V1BETA1
    for ep in out.get("endpoints") or []:
        topo = dict(ep.pop("deprecatedTopology", None) or {})
        if ep.get("nodeName"):
            topo.setdefault("kubernetes.io/hostname", ep["nodeName"])
        zone = ep.pop("zone", None)
        if zone:
            topo.setdefault("topology.kubernetes.io/zone", zone)
        if topo:
            ep["topology"] = topo
    return out


def endpoints_for(namespace: str, service: str, slices: list[dict[str, Any]],
                  labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The v1 Endpoints of ``service`` from its EndpointSlices."""
    subsets = []
    for sl in sorted(slices, key=lambda o: o["metadata"]["name"]):
        ports = [{k: v for k, v in (("name", p.get("name")), ("port", p.get("port")),
                                    ("protocol", p.get("protocol") or "TCP")) if v not in (None, "")}
                 for p in sl.get("ports") or []]
        ready, not_ready = [], []
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            for ip in ep.get("addresses") or []:
                addr: dict[str, Any] = {"ip": ip}
                for k in ("nodeName", "targetRef", "hostname"):
                    if ep.get(k):
                        addr[k] = copy.deepcopy(ep[k])
                # unset ready means ready (EndpointSlice API); terminating ones are not
                (ready if cond.get("ready", True) is not False else not_ready).append(addr)
        if not (ready or not_ready) or not ports:
            continue
        subset: dict[str, Any] = {"ports": ports}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subsets.append(subset)
    meta: dict[str, Any] = {"name": service, "namespace": namespace}
    if labels:
        meta["labels"] = dict(labels)
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta}
    if subsets:
        out["subsets"] = subsets
    return out


def derived_objects(desired: dict[tuple[str, str, str], dict[str, Any]]
                    ) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The legacy objects for a published state, keyed as the API server stores them."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
    beta_kind = store_kind("EndpointSlice", V1BETA1)
    for (kind, ns, name), obj in desired.items():
        if kind != "EndpointSlice":
            continue
        out[(beta_kind, ns, name)] = endpointslice_v1beta1(obj)
        svc = ((obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            by_service.setdefault((ns, svc), []).append(obj)
    for (ns, svc), slices in by_service.items():
        service = desired.get(("Service", ns, svc))
        labels = ((service or {}).get("metadata") or {}).get("labels")
        out[("Endpoints", ns, svc)] = endpoints_for(ns, svc, slices, labels)
    return out
