"""Minimal Kubernetes-shaped dicts for the daemon's tests (the harness has richer builders;
these tests stand alone)."""

from __future__ import annotations

from typing import Any

import yaml


def service(ns: str, name: str, cluster_ip: str, *, port: int = 80, protocol: str = "TCP",
            port_name: str = "p80", **spec: Any) -> dict[str, Any]:
    status = spec.pop("status", None)
    obj = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name},
        "spec": {
            "type": spec.pop("type", "ClusterIP"),
            "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
            "ports": [{"name": port_name, "port": port, "protocol": protocol,
                       "targetPort": spec.pop("target_port", port)}],
            **spec,
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def endpoint_slice(ns: str, svc: str, ips: list[str], *, port: int = 80, protocol: str = "TCP",
                   port_name: str = "p80", node: str | None = None, ready: bool = True,
                   suffix: str = "abcde") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": f"{svc}-{suffix}",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ready},
             **({"nodeName": node} if node else {})}
            for ip in ips
        ],
        "ports": [{"name": port_name, "port": port, "protocol": protocol}],
    }


def state_list(items: list[dict[str, Any]], gen: int) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": str(gen)}, "items": items})
