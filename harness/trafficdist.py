"""The EndpointSlice controller's hints for ``spec.trafficDistribution``.

kube-proxy never reads ``trafficDistribution``: it reads the hints the EndpointSlice
controller writes from it, and its own Node's zone label. The harness plays that
controller, so it writes the hints the controller would. It follows
``staging/src/k8s.io/endpointslice/trafficdist/trafficdist.go`` as of Kubernetes v1.35
(PreferSameNode GA, KEP-3015) through v1.37: for ``PreferClose`` and ``PreferSameZone``
every *ready* endpoint gets ``forZones: [its zone]`` (none without a zone); for
``PreferSameNode`` also ``forNodes: [its nodeName]``; endpoints that are not ready keep
what they had. Any other value (or none) is the default heuristic, which clears every hint;
it is applied only when the test set a value, so a test may still write hints itself (the
``service.kubernetes.io/topology-mode: Auto`` path, whose proportional hints the
controller's topology cache computes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from harness.model import EndpointSpec, SliceSpec

PREFER_CLOSE = frozenset({"PreferClose", "PreferSameZone", "PreferSameNode"})


def endpoint_hints(endpoint: EndpointSpec, traffic_distribution: str | None) -> EndpointSpec:
    """``endpoint`` with the hints the controller writes for ``traffic_distribution``."""
    if traffic_distribution not in PREFER_CLOSE:
        return replace(endpoint, for_zones=None, for_nodes=None)
    if endpoint.ready is not True:  # the controller's endpointReady: Ready set and true
        return endpoint
    zones = (endpoint.zone,) if endpoint.zone else None
    nodes = (endpoint.node,) if endpoint.node and traffic_distribution == "PreferSameNode" else None
    return replace(endpoint, for_zones=zones, for_nodes=nodes)


def reconcile(traffic_distribution: str | None, slices: Sequence[SliceSpec]) -> list[SliceSpec]:
    """The slices as the controller leaves them for a Service with ``traffic_distribution``
    (the slices themselves when it is unset: see the module docstring)."""
    if traffic_distribution is None:
        return list(slices)
    return [replace(s, endpoints=[endpoint_hints(e, traffic_distribution) for e in s.endpoints])
            for s in slices]
