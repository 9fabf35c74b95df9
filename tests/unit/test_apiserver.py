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


def test_only_the_kinds_a_proxier_reads_are_served(tmp_path):
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
    ("/api/v1/services?resourceVersion=abc", 400),
])
def test_errors_are_status_bodies(target, code):
    r = ApiState().handle("GET", target)
    assert r.code == code
    assert r.body["kind"] == "Status" and r.body["status"] == "Failure" and r.body["code"] == code
    assert r.body["message"]


def test_a_watch_from_an_unparsable_resource_version_ends_in_an_error_event():
    # as kube-apiserver: the watch is opened (200), then one ERROR event (code 500) ends it
    r = ApiState().handle("GET", "/api/v1/services?watch=1&resourceVersion=abc")
    assert r.code == 200
    events = list(r.stream)
    assert [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 500 and "abc" in events[0]["object"]["message"]


def test_writes_other_than_events_are_refused_and_events_accepted():
    st = ApiState()
    r = st.handle("POST", "/api/v1/namespaces/ns1/services")
    assert r.code == 405 and r.body["kind"] == "Status"
    assert st.handle("DELETE", "/api/v1/nodes/node1").code == 405
    assert st.handle("POST", "/api/v1/namespaces/default/events").code == 201
    assert st.handle("PATCH", "/apis/events.k8s.io/v1/namespaces/default/events/e1").code == 200
    assert st.handle("PUT", "/apis/events.k8s.io/v1/namespaces/default/events/e1").code == 200


def test_discovery_answers():
    st = ApiState()
    assert st.handle("GET", "/healthz").body == "ok"
    assert st.handle("GET", "/readyz").body == "ok"
    assert st.handle("GET", "/version").body["major"] == "1"
    assert st.handle("GET", "/api").body["versions"] == ["v1"]
    groups = {g["name"] for g in st.handle("GET", "/apis").body["groups"]}
    assert groups == {"discovery.k8s.io", "events.k8s.io", "networking.k8s.io"}
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


# --- what client-go 0.35+ and kube-proxy ask for -------------------------------------------

WATCH_LIST = ("watch=true&allowWatchBookmarks=true&sendInitialEvents=true"
              "&resourceVersionMatch=NotOlderThan&timeoutSeconds=0")


def test_streaming_list_ends_its_initial_events_with_an_annotated_bookmark():
    # client-go's WatchListClient (on by default since 0.35) never syncs without it
    st = ApiState()
    rv = st.apply({("Service", "ns1", "a"): svc("a"), ("Service", "ns1", "b"): svc("b")})
    events = _watch(st, f"/api/v1/services?{WATCH_LIST}")
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "a"), ("ADDED", "b"), ("BOOKMARK", None)]
    assert events[-1]["object"] == {"kind": "Service", "apiVersion": "v1", "metadata": {
        "resourceVersion": str(rv), "annotations": {"k8s.io/initial-events-end": "true"}}}


def test_streaming_list_of_an_empty_selection_still_ends_with_the_bookmark():
    st = ApiState()
    st.apply({("Node", "", "node1"): node("node1")})
    events = _watch(st, f"/api/v1/nodes?{WATCH_LIST}&fieldSelector=metadata.name%3Dnode9")
    assert [e["type"] for e in events] == ["BOOKMARK"]


@pytest.mark.parametrize("query,words", [
    ("watch=true&sendInitialEvents=true&allowWatchBookmarks=true", "requires setting resourceVersionMatch"),
    ("watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan", "allowWatchBookmarks"),
    ("watch=true&resourceVersionMatch=NotOlderThan", "forbidden for watch unless sendInitialEvents"),
    ("sendInitialEvents=true", "forbidden for list"),
])
def test_invalid_streaming_list_requests_are_422(query, words):
    r = ApiState().handle("GET", f"/api/v1/services?{query}")
    assert r.code == 422 and r.body["reason"] == "Invalid" and words in r.body["message"]


def test_services_can_be_selected_by_cluster_ip_as_kube_proxy_does():
    headless = svc("h")
    headless["spec"]["clusterIP"] = "None"
    st = ApiState()
    st.apply({("Service", "ns1", "a"): svc("a"), ("Service", "ns1", "h"): headless})
    r = st.handle("GET", "/api/v1/services?fieldSelector=spec.clusterIP%21%3DNone")
    assert [o["metadata"]["name"] for o in r.body["items"]] == ["a"]
    assert parse_field_selector("spec.type=NodePort", "Service") == [Requirement("spec.type", "=", ("NodePort",))]
    with pytest.raises(SelectorError, match="spec.clusterIP"):
        parse_field_selector("spec.clusterIP=None", "Node")


def test_service_cidrs_are_served_cluster_scoped():
    st = ApiState()
    st.apply({("ServiceCIDR", "", "kubernetes"): model.service_cidr_object("kubernetes", ["10.96.0.0/16"])})
    r = st.handle("GET", "/apis/networking.k8s.io/v1/servicecidrs")
    assert r.code == 200 and r.body["kind"] == "ServiceCIDRList"
    assert r.body["items"][0]["spec"]["cidrs"] == ["10.96.0.0/16"]
    assert st.handle("GET", "/apis/networking.k8s.io/v1/namespaces/x/servicecidrs").code == 404
    groups = st.handle("GET", "/apis").body["groups"]
    assert "networking.k8s.io" in [g["name"] for g in groups]


@pytest.mark.parametrize("ctype", ["application/json", "application/vnd.kubernetes.protobuf"])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_events_are_accepted_in_either_content_type(method, ctype):
    # kube-proxy records events with protobuf bodies; bodies are not read, so both types
    # get the same answer (tests/integration/test_apiserver_client.py sends real bodies)
    r = ApiState().handle(method, "/apis/events.k8s.io/v1/namespaces/default/events")
    assert r.code == (201 if method == "POST" else 200) and r.body["kind"] == "Event"


def test_the_harness_namespace_is_published_last():
    # the sentinel Service proves a proxier has applied a state only if its objects come
    # after every other object of the same publish, in every watch
    from harness.controlplane.statedir import SYSTEM_NAMESPACE

    sentinel = svc("sentinel")
    sentinel["metadata"]["namespace"] = SYSTEM_NAMESPACE
    st = ApiState()
    start = st.apply({})
    st.apply({("Service", SYSTEM_NAMESPACE, "sentinel"): sentinel,
              ("Service", "zzz", "a"): svc("a"), ("Service", "aaa", "b"): svc("b")})
    events = _watch(st, f"/api/v1/services?watch=1&resourceVersion={start}&timeoutSeconds=0")
    assert [e["object"]["metadata"]["name"] for e in events] == ["b", "a", "sentinel"]


# --- legacy API versions (issue 15: kube-proxy before 1.21) ------------------------------

def test_legacy_versions_are_served_only_when_asked(tmp_path):
    cp = plane(tmp_path)
    cp.put(svc("a"), eps("a", "a-1"))
    cp.publish()
    assert cp.state.handle("GET", "/api/v1/endpoints").code == 404
    assert cp.state.handle("GET", "/apis/discovery.k8s.io/v1beta1/endpointslices").code == 404
    assert "endpoints" not in {r["name"] for r in cp.state.handle("GET", "/api/v1").body["resources"]}


def test_old_proxiers_get_endpoints_and_v1beta1_slices_from_the_same_objects(tmp_path):
    cp = ApiControlPlane(tmp_path / "state", tmp_path, legacy_apis=True)
    not_ready = model.endpoint_slice_object("a", "ns1", SliceSpec(
        name="a-2", endpoints=[EndpointSpec(ip="10.244.2.7", node="node2", ready=False)],
        ports=[("", 8080, "TCP")]))
    cp.put(svc("a"), eps("a", "a-1"), not_ready, node("node1"))
    start = cp.publish()
    r = cp.state.handle("GET", "/apis/discovery.k8s.io/v1beta1/namespaces/ns1/endpointslices")
    assert r.body["apiVersion"] == "discovery.k8s.io/v1beta1"
    items = {i["metadata"]["name"]: i for i in r.body["items"]}
    assert set(items) == {"a-1", "a-2"}
    assert "apiVersion" not in items["a-1"]  # the list's apiVersion names it, as kube-apiserver's
    assert items["a-1"]["endpoints"][0]["topology"] == {"kubernetes.io/hostname": "node1"}
    # the current version still lists only its own objects
    v1 = cp.state.handle("GET", "/apis/discovery.k8s.io/v1/endpointslices").body
    assert v1["apiVersion"] == "discovery.k8s.io/v1" and len(v1["items"]) == 2
    assert all("endpoints" in i and "topology" not in i["endpoints"][0] for i in v1["items"])
    ep = cp.state.handle("GET", "/api/v1/namespaces/ns1/endpoints/a").body
    assert ep["kind"] == "Endpoints"
    assert [[a["ip"] for a in s.get("addresses", [])] for s in ep["subsets"]] == [["10.244.1.5"], []]
    assert ep["subsets"][1]["notReadyAddresses"][0]["ip"] == "10.244.2.7"
    assert ep["subsets"][0]["addresses"][0]["nodeName"] == "node1"
    assert ep["subsets"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    groups = {g["name"]: g for g in cp.state.handle("GET", "/apis").body["groups"]}
    assert {v["version"] for v in groups["discovery.k8s.io"]["versions"]} == {"v1", "v1beta1"}
    # a slice removed: its v1beta1 copy is DELETED and the Endpoints MODIFIED, in watches
    cp.remove("EndpointSlice", "ns1", "a-1")
    cp.publish()
    beta = _watch(cp.state, f"/apis/discovery.k8s.io/v1beta1/endpointslices?watch=1&resourceVersion={start}"
                  "&timeoutSeconds=0")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in beta] == [("DELETED", "a-1")]
    assert beta[0]["object"]["apiVersion"] == "discovery.k8s.io/v1beta1"
    eps_events = _watch(cp.state, f"/api/v1/endpoints?watch=1&resourceVersion={start}&timeoutSeconds=0")
    assert [e["type"] for e in eps_events] == ["MODIFIED"]
    assert len(eps_events[0]["object"]["subsets"]) == 1
    # a bookmark on a legacy watch names the legacy version
    bm = _watch(cp.state, "/apis/discovery.k8s.io/v1beta1/endpointslices?watch=1&sendInitialEvents=true"
                "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=0")
    assert bm[-1]["type"] == "BOOKMARK" and bm[-1]["object"]["apiVersion"] == "discovery.k8s.io/v1beta1"
