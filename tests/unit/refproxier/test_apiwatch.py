"""refproxier.apiwatch without an API: what ``poll`` hands the daemon as lists, events and
bookmarks arrive (the informers themselves run against the harness's API server in
tests/selftest/test_control_plane_api.py)."""

from __future__ import annotations

from lightkube.codecs import from_dict

from harness import model
from harness.model import PortSpec, ServiceSpecIn
from refproxier.apiwatch import ApiSource


def svc(name: str, rv: int) -> object:
    d = model.service_object(ServiceSpecIn(name=name, namespace="ns1", ports=[PortSpec(80, 8080, "TCP", "")],
                                           cluster_ip="10.96.1.1"))
    d["metadata"]["resourceVersion"] = str(rv)
    return from_dict(d)


def service_cidr(name: str, rv: int) -> object:
    d = model.service_cidr_object(name, ["10.96.0.0/16"])
    d["metadata"]["resourceVersion"] = str(rv)
    return from_dict(d)


def test_nothing_before_every_kind_is_listed_then_the_lowest_resource_version():
    src = ApiSource("/nonexistent", "node1")
    src.replace_kind("Service", {("ns1", "a"): svc("a", 5)}, 7)
    src.replace_kind("EndpointSlice", {}, 6)
    assert src.poll(0) is None  # the Node is not listed yet
    src.replace_kind("Node", {}, 8)
    assert src.poll(0) is None  # nor the ServiceCIDRs
    src.replace_kind("ServiceCIDR", {("", "kubernetes"): service_cidr("kubernetes", 9)}, 9)
    token, loaded = src.poll(0)
    assert loaded.generation == 6  # every change up to 6 is in; 7 and 8 maybe not
    assert list(loaded.cluster.services) == [("ns1", "a")]
    assert list(loaded.cluster.service_cidrs) == ["kubernetes"]
    assert src.poll(token) is None  # nothing new


def test_events_and_bookmarks_advance_the_generation():
    src = ApiSource("/nonexistent", "node1")
    for kind in ("Service", "EndpointSlice", "Node", "ServiceCIDR"):
        src.replace_kind(kind, {}, 3)
    token, _ = src.poll(0)
    src.apply_event("Service", "ADDED", svc("b", 4), 4)
    token, loaded = src.poll(token)
    assert loaded.generation == 3 and ("ns1", "b") in loaded.cluster.services
    src.apply_event("EndpointSlice", "BOOKMARK", None, 4)
    src.apply_event("Node", "BOOKMARK", None, 4)
    src.apply_event("ServiceCIDR", "BOOKMARK", None, 4)
    token, loaded = src.poll(token)
    assert loaded.generation == 4
    src.apply_event("Service", "DELETED", svc("b", 5), 5)
    token, loaded = src.poll(token)
    assert loaded.cluster.services == {}


def test_watched_objects_are_validated_like_state_yaml():
    import pytest

    from servicemodel.load import ModelError, load_dict

    assert load_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}) is None
    with pytest.raises(ModelError, match="metadata.namespace"):
        load_dict({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}},
                  source="watch Service")
