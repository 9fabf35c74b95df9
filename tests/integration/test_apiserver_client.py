"""The API control plane's HTTP server against a real client (lightkube), root only.

The server listens on the lan router address inside a topology's lan namespace; the client
runs in a node's namespace (``ip netns exec``) and reaches it over the lan, exactly as a
proxier does. It lists, then watches: ADDED, MODIFIED and DELETED arrive in order. Nothing
listens in the root namespace (checked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import model
from harness.controlplane.apiserver import API_PORT, ApiControlPlane
from harness.model import PortSpec, ServiceSpecIn

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

# Runs in the node's namespace: list Services, print the list, then watch from its
# resourceVersion and print each event until three have arrived. Also a raw request or two
# (http.client) for what lightkube does not show: Status bodies and the events endpoint.
CLIENT = r"""
import http.client, json, sys
from urllib.parse import urlsplit
from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Service, Node

kc = KubeConfig.from_file(sys.argv[1])
client = Client(config=kc)
listed = client.list(Service, namespace="*")
names = [s.metadata.name for s in listed]
nodes = [n.metadata.name for n in client.list(Node, fields={"metadata.name": "node1"})]
u = urlsplit(kc.get().cluster.server)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
conn.request("GET", "/api/v1/namespaces/ns1/services/nope")
r = conn.getresponse()
missing = (r.status, json.loads(r.read()))
posts = []
# kube-proxy records events with protobuf bodies (its --kube-api-content-type default);
# a JSON client sends JSON: both are accepted, POST and PATCH
for method, ctype, body in (
        ("POST", "application/json", b'{"kind":"Event","apiVersion":"events.k8s.io/v1"}'),
        ("POST", "application/vnd.kubernetes.protobuf", b"k8s\x00\n\x14\n\x12events.k8s.io/v1"),
        ("PATCH", "application/strategic-merge-patch+json", b'{"series":{"count":2}}')):
    path = "/apis/events.k8s.io/v1/namespaces/default/events"
    conn.request(method, path + ("/e1" if method == "PATCH" else ""), body=body,
                 headers={"Content-Type": ctype})
    r = conn.getresponse(); r.read()
    posts.append(r.status)
print(json.dumps({"listed": names, "rv": listed.resourceVersion, "nodes": nodes,
                  "missing": missing, "event_post": posts}), flush=True)
seen = 0
for typ, obj in client.watch(Service, namespace="*", resource_version=listed.resourceVersion,
                             server_timeout=20):
    spec_port = obj.spec.ports[0].port if obj.spec and obj.spec.ports else None
    print(json.dumps([typ, obj.metadata.name, obj.metadata.resourceVersion, spec_port]), flush=True)
    seen += 1
    if seen == 3:
        break
"""


def svc(name: str, port: int) -> dict:
    return model.service_object(ServiceSpecIn(name=name, namespace="ns1", ports=[PortSpec(port, 8080, "TCP", "")],
                                              cluster_ip="10.96.1.1"))


@pytest.fixture(params=["ipv4", "ipv6"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[object, ApiControlPlane]]:
    from harness.topology.netns import Topology
    from harness.topology.spec import IPV6_PLAN, NodeSpec, TopologySpec

    plan = IPV6_PLAN if request.param == "ipv6" else {}
    spec = TopologySpec(**plan, nodes=[NodeSpec("node1")], clients=[])
    with Topology(spec) as topo:
        cp = ApiControlPlane(tmp_path / "state", tmp_path)
        cp.start(topo.lan_netns, str(topo.resolved.router))
        try:
            yield topo, cp
        finally:
            cp.stop()


def _root_listens_on_api_port() -> bool:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{API_PORT}"], capture_output=True, text=True).stdout
    return bool(out.strip())


def test_lightkube_lists_and_watches_in_order(api: tuple) -> None:
    topo, cp = api
    assert not _root_listens_on_api_port(), "the API server must listen in the lan namespace only"
    cp.put(model.node_object("node1", ["192.0.2.11"]), svc("a", 80))
    cp.publish()
    node = topo.nodes["node1"]
    proc = subprocess.Popen(["ip", "netns", "exec", node.netns, sys.executable, "-c", CLIENT,
                             str(cp.kubeconfig)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = json.loads(proc.stdout.readline() or "null")
        assert first is not None, proc.stderr.read()
        assert first["listed"] == ["a"] and first["nodes"] == ["node1"]
        assert int(first["rv"]) == cp.generation
        code, status = first["missing"]
        assert code == 404 and status["kind"] == "Status" and status["reason"] == "NotFound"
        assert first["event_post"] == [201, 201, 200]
        # three changes, each its own generation; the watch must see them in order
        cp.put(svc("b", 81))
        g_add = cp.publish()
        time.sleep(0.05)
        cp.put(svc("b", 82))
        g_mod = cp.publish()
        cp.remove("Service", "ns1", "b")
        g_del = cp.publish()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line) for line in out.splitlines()]
    assert events == [["ADDED", "b", str(g_add), 81], ["MODIFIED", "b", str(g_mod), 82],
                      ["DELETED", "b", str(g_del), 82]], err


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_gets_services_and_nodes(api: tuple) -> None:
    topo, cp = api
    cp.put(model.node_object("node1", ["192.0.2.11"]), svc("a", 80),
           svc("h", 81) | {"metadata": {"name": "h", "namespace": "ns1",
                                        "labels": {"service.kubernetes.io/headless": ""}}})
    cp.publish()

    def kubectl(*args: str) -> dict:
        r = subprocess.run(["ip", "netns", "exec", topo.nodes["node1"].netns, "kubectl",
                            f"--kubeconfig={cp.kubeconfig}", "--request-timeout=10s", *args,
                            "-o", "json"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    assert [i["metadata"]["name"] for i in kubectl("get", "svc", "-A")["items"]] == ["a", "h"]
    selected = kubectl("get", "services", "-A", "-l", "!service.kubernetes.io/headless")
    assert [i["metadata"]["name"] for i in selected["items"]] == ["a"]
    assert kubectl("get", "nodes", "node1")["metadata"]["name"] == "node1"
