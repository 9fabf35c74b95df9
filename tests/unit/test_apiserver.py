"""The API control plane's pure parts: selectors, list/get/watch answers, resourceVersions,
410 on a too-old version, Status bodies. No sockets (the HTTP layer is exercised by
tests/integration/test_apiserver_client.py inside a topology's namespaces)."""

from __future__ import annotations

import threading
import time

import pytest

from harness import model
from harness.controlplane.apiserver import (
    ApiControlPlane,
    ApiState,
    Requirement,
    Selection,
    SelectorError,
    WatchParams,
    parse_field_selector,
    parse_label_selector,
    server_url,
    write_kubeconfig,
)
from harness.model import EndpointSpec, PortSpec, ServiceSpecIn, SliceSpec

KUBE_PROXY_SELECTOR = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"


def svc(name: str, labels: dict | None = None, port: int = 80) -> dict:
    return model.service_object(ServiceSpecIn(name=name, namespace="ns1", ports=[PortSpec(port, 8080, "TCP", "")],
                                              cluster_ip="10.96.1.1", labels=labels or {}))


def eps(service: str, name: str) -> dict:
    return model.endpoint_slice_object(service, "ns1", SliceSpec(
        name=name, endpoints=[EndpointSpec(ip="10.244.1.5", node="node1")], ports=[("", 8080, "TCP")]))


def node(name: str) -> dict:
    return model.node_object(name, ["192.0.2.11"], "10.244.1.0/24")


def plane(tmp_path) -> ApiControlPlane:
    return ApiControlPlane(tmp_path / "state", tmp_path)


# --- selectors ----------------------------------------------------------------------------

def test_kube_proxys_label_selector_excludes_proxy_name_and_headless():
    reqs = parse_label_selector(KUBE_PROXY_SELECTOR)
    assert reqs == [Requirement("service.kubernetes.io/service-proxy-name", "!exists"),
                    Requirement("service.kubernetes.io/headless", "!exists")]
    sel = Selection("Service", labels=tuple(reqs))
    assert sel.matches(svc("a"))
    assert not sel.matches(svc("b", {"service.kubernetes.io/service-proxy-name": "other"}))
    assert not sel.matches(svc("c", {"service.kubernetes.io/headless": ""}))


@pytest.mark.parametrize("selector,labels,expected", [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "web"}, True),
    ("app=web", {"app": "db"}, False),
    ("app!=web", {}, True),  # != matches objects without the label, as the real API
    ("app!=web", {"app": "web"}, False),
    ("app", {"app": ""}, True),
    ("app", {}, False),
    ("app in (web, db)", {"app": "db"}, True),
    ("app in (web,db),tier", {"app": "db"}, False),
    ("app notin (web)", {"app": "db"}, True),
    ("app notin (web)", {}, True),
    ("example.com/x=1,!example.com/y", {"example.com/x": "1"}, True),
    ("", {"anything": "x"}, True),
])
def test_label_selector_operators(selector, labels, expected):
    reqs = parse_label_selector(selector)
    assert all(r.matches(labels) for r in reqs) is expected


@pytest.mark.parametrize("bad", ["app=(x", "=web", "app in web", "a b"])
def test_bad_label_selectors_are_rejected(bad):
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_field_selector_name_and_namespace():
    sel = Selection("Node", fields=tuple(parse_field_selector("metadata.name=node1")))
    assert sel.matches(node("node1")) and not sel.matches(node("node2"))
    sel = Selection("Service", fields=tuple(parse_field_selector("metadata.namespace!=ns1")))
    assert not sel.matches(svc("a"))
    with pytest.raises(SelectorError, match="spec.nodeName"):
        parse_field_selector("spec.nodeName=node1")


# --- list and get ---------------------------------------------------------------------------

def test_list_has_the_global_resource_version_and_server_fields(tmp_path):
    cp = plane(tmp_path)
    cp.put(svc("a"), svc("b"), eps("a", "a-1"), node("node1"))
    gen = cp.publish()
    assert gen == cp.generation == 5  # 1 + one per object
    r = cp.state.handle("GET", "/api/v1/services")
    assert r.code == 200
    assert r.body["kind"] == "ServiceList" and r.body["apiVersion"] == "v1"
    assert r.body["metadata"]["resourceVersion"] == "5"
    names = [i["metadata"]["name"] for i in r.body["items"]]
    assert names == ["a", "b"]
    for item in r.body["items"]:
        assert {"resourceVersion", "uid", "creationTimestamp"} <= set(item["metadata"])
    r = cp.state.handle("GET", "/apis/discovery.k8s.io/v1/namespaces/ns1/endpointslices")
    assert r.body["kind"] == "EndpointSliceList" and len(r.body["items"]) == 1
    assert cp.state.handle("GET", "/apis/discovery.k8s.io/v1/namespaces/other/endpointslices").body["items"] == []
    r = cp.state.handle("GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dnode1")
    assert [i["metadata"]["name"] for i in r.body["items"]] == ["node1"]
    r = cp.state.handle("GET", "/api/v1/services?labelSelector=" + KUBE_PROXY_SELECTOR)
    assert len(r.body["items"]) == 2


def test_get_one_object_and_not_found_status(tmp_path):
    cp = plane(tmp_path)
    cp.put(svc("a"), node("node1"))
    cp.publish()
    r = cp.state.handle("GET", "/api/v1/namespaces/ns1/services/a")
    assert r.code == 200 and r.body["metadata"]["name"] == "a"
    assert cp.state.handle("GET", "/api/v1/nodes/node1").body["kind"] == "Node"
    r = cp.state.handle("GET", "/api/v1/namespaces/ns1/services/zz")
    assert r.code == 404
    assert r.body["kind"] == "Status" and r.body["reason"] == "NotFound" and r.body["code"] == 404


def test_unchanged_objects_keep_their_resource_version_and_uid(tmp_path):
    cp = plane(tmp_path)
    cp.put(svc("a"), svc("b"))
    cp.publish()
    before = cp.state.handle("GET", "/api/v1/namespaces/ns1/services/a").body["metadata"]
    cp.put(svc("b", port=81))
    gen = cp.publish()
    after = cp.state.handle("GET", "/api/v1/namespaces/ns1/services/a").body["metadata"]
    assert after == before
    b = cp.state.handle("GET", "/api/v1/namespaces/ns1/services/b").body["metadata"]
    assert b["resourceVersion"] == str(gen)


def test_a_publish_without_changes_is_still_a_new_generation(tmp_path):
    cp = plane(tmp_path)
    g1 = cp.publish()
    g2 = cp.publish()
    assert g2 == g1 + 1 and set(cp.published_at) == {g1, g2}


def test_only_the_three_kinds_are_served(tmp_path):
    cp = plane(tmp_path)
    cp.put({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "ns1"}})
    gen = cp.publish()
    assert gen == 2  # just the bump
    assert cp.state.live == {}


# --- errors, discovery, events -------------------------------------------------------------

@pytest.mark.parametrize("target,code", [
    ("/api/v1/pods", 404),
    ("/api/v1/namespaces/ns1/nodes", 404),
    ("/apis/apps/v1/deployments", 404),
    ("/api/v1/services?labelSelector=a%20b", 400),
    ("/api/v1/nodes?fieldSelector=spec.x%3D1", 400),
    ("/api/v1/services?watch=1&resourceVersion=abc", 400),
])
def test_errors_are_status_bodies(target, code):
    r = ApiState().handle("GET", target)
    assert r.code == code
    assert r.body["kind"] == "Status" and r.body["status"] == "Failure" and r.body["code"] == code
    assert r.body["message"]


def test_writes_other_than_events_are_refused_and_events_accepted():
    st = ApiState()
    r = st.handle("POST", "/api/v1/namespaces/ns1/services")
    assert r.code == 405 and r.body["kind"] == "Status"
    assert st.handle("DELETE", "/api/v1/nodes/node1").code == 405
    assert st.handle("POST", "/api/v1/namespaces/default/events").code == 201
    assert st.handle("PATCH", "/apis/events.k8s.io/v1/namespaces/default/events/e1").code == 201
    assert st.handle("PUT", "/apis/events.k8s.io/v1/namespaces/default/events/e1").code == 201


def test_discovery_answers():
    st = ApiState()
    assert st.handle("GET", "/healthz").body == "ok"
    assert st.handle("GET", "/readyz").body == "ok"
    assert st.handle("GET", "/version").body["major"] == "1"
    assert st.handle("GET", "/api").body["versions"] == ["v1"]
    groups = {g["name"] for g in st.handle("GET", "/apis").body["groups"]}
    assert groups == {"discovery.k8s.io", "events.k8s.io"}
    core = st.handle("GET", "/api/v1").body
    assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["services"]["verbs"] == ["get", "list", "watch"]
    assert by_name["nodes"]["namespaced"] is False
    disc = st.handle("GET", "/apis/discovery.k8s.io/v1").body
    assert [r["kind"] for r in disc["resources"]] == ["EndpointSlice"]


def test_kubeconfig_names_the_server(tmp_path):
    import yaml

    path = write_kubeconfig(tmp_path / "kc", server_url("2001:db8::1"))
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "http://[2001:db8::1]:6443"
    assert doc["current-context"] == "svcconf"
    assert server_url("192.0.2.1") == "http://192.0.2.1:6443"


# --- watch ----------------------------------------------------------------------------------

def _watch(st: ApiState, target: str) -> list[dict]:
    r = st.handle("GET", target)
    assert r.code == 200 and r.stream is not None
    return list(r.stream)


def test_watch_replays_added_modified_deleted_in_order(tmp_path):
    cp = plane(tmp_path)
    cp.put(node("node1"))
    start = cp.publish()
    cp.put(svc("a"))
    g_add = cp.publish()
    cp.put(svc("a", port=81))
    g_mod = cp.publish()
    cp.remove("Service", "ns1", "a")
    g_del = cp.publish()
    events = _watch(cp.state, f"/api/v1/services?watch=1&resourceVersion={start}&timeoutSeconds=0")
    assert [(e["type"], int(e["object"]["metadata"]["resourceVersion"])) for e in events] == [
        ("ADDED", g_add), ("MODIFIED", g_mod), ("DELETED", g_del)]
    assert events[1]["object"]["spec"]["ports"][0]["port"] == 81


def test_watch_without_resource_version_starts_with_the_current_objects():
    st = ApiState()
    st.apply({("Service", "ns1", "a"): svc("a"), ("Node", "", "node1"): node("node1")})
    events = _watch(st, "/api/v1/services?watch=true&timeoutSeconds=0")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_watch_bookmarks_carry_the_global_resource_version():
    st = ApiState()
    rv = st.apply({("Node", "", "node1"): node("node1")})
    got: list[dict] = []
    r = st.handle("GET", f"/apis/discovery.k8s.io/v1/endpointslices?watch=1&resourceVersion={rv}"
                  "&allowWatchBookmarks=true&timeoutSeconds=5")

    def consume() -> None:
        for e in r.stream:
            got.append(e)
            if e["type"] == "BOOKMARK":
                return

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.05)
    new = st.apply({("Node", "", "node1"): node("node1"), ("Service", "ns1", "a"): svc("a")})
    t.join(5)
    assert got == [{"type": "BOOKMARK", "object": {
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": str(new)}}}]


def test_watch_sees_objects_enter_and_leave_its_label_selection():
    st = ApiState()
    rv = st.apply({("Service", "ns1", "a"): svc("a")})
    st.apply({("Service", "ns1", "a"): svc("a", {"service.kubernetes.io/service-proxy-name": "x"})})
    st.apply({("Service", "ns1", "a"): svc("a")})
    events = _watch(st, f"/api/v1/services?watch=1&resourceVersion={rv}&timeoutSeconds=0"
                        f"&labelSelector={KUBE_PROXY_SELECTOR}")
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


def test_watch_from_a_too_old_resource_version_is_410():
    st = ApiState(history_limit=3)
    first = st.apply({})
    for port in range(5):
        st.apply({("Service", "ns1", "a"): svc("a", port=80 + port)})
    events = _watch(st, f"/api/v1/services?watch=1&resourceVersion={first}&timeoutSeconds=0")
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    # a recent version still resumes
    recent = st.rv - 1
    events = _watch(st, f"/api/v1/services?watch=1&resourceVersion={recent}&timeoutSeconds=0")
    assert [e["type"] for e in events] == ["MODIFIED"]


def test_watch_ends_at_its_timeout():
    st = ApiState()
    st.apply({})
    t0 = time.monotonic()
    r = st.handle("GET", f"/api/v1/services?watch=1&resourceVersion={st.rv}&timeoutSeconds=0.3")
    assert list(r.stream) == []
    assert 0.25 < time.monotonic() - t0 < 2


def test_watch_params_parse():
    st = ApiState()
    gen = st.watch_events(WatchParams(Selection("Node"), None, 0, False))
    assert list(gen) == []


def test_wait_applied_reads_acks_and_names_the_control_plane(tmp_path):
    from harness.controlplane.statedir import SyncTimeout
    from servicemodel import statedir

    cp = plane(tmp_path)
    gen = cp.publish()
    statedir.write_applied(cp.state_dir, "node1", gen)
    assert cp.wait_applied(gen, ["node1"], timeout=1) < 1
    with pytest.raises(SyncTimeout, match="node2.*--control-plane api"):
        cp.wait_applied(gen, ["node1", "node2"], timeout=0.05)
    assert not (cp.state_dir / "state.yaml").exists()  # a proxier ignoring the API never syncs
