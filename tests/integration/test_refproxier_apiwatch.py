"""refproxier's API informers (``refproxier.apiwatch.ApiSource``) against the harness's API
server, root only: the server in a topology's lan namespace, the watcher thread started
from a thread inside the node's namespace (threads inherit their creator's namespace; the
test checks that before starting it). The history is kept tiny, so a burst of changes
ends the live watches with 410 Gone: the informers must re-list and catch up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import model
from harness.controlplane.apiserver import ApiControlPlane, ApiState
from harness.model import PortSpec, ServiceSpecIn
from harness.topology.nsutil import NetnsThread, netns_path
from refproxier.apiwatch import ApiSource

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def svc(name: str, labels: dict | None = None) -> dict:
    return model.service_object(ServiceSpecIn(name=name, namespace="ns1", ports=[PortSpec(80, 8080, "TCP", "")],
                                              cluster_ip="10.96.1.1", labels=labels or {}))


def _thread_netns() -> int:
    got: dict[str, int] = {}
    t = threading.Thread(target=lambda: got.setdefault("ino", os.stat("/proc/thread-self/ns/net").st_ino))
    t.start()
    t.join()
    return got["ino"]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[ApiControlPlane, ApiSource]]:
    from harness.topology.netns import Topology
    from harness.topology.spec import NodeSpec, TopologySpec

    with Topology(TopologySpec(nodes=[NodeSpec("node1"), NodeSpec("node2")], clients=[])) as topo:
        cp = ApiControlPlane(tmp_path / "state", tmp_path, state=ApiState(history_limit=2))
        cp.start(topo.lan_netns, str(topo.resolved.router))
        worker = NetnsThread(topo.nodes["node1"].netns)
        src = ApiSource(str(cp.kubeconfig), "node1")
        try:
            # the watcher's thread must live in the node's namespace, as its creator does
            assert worker.call(_thread_netns) == os.stat(netns_path(topo.nodes["node1"].netns)).st_ino
            worker.call(src.start)
            yield cp, src
        finally:
            src.stop()
            worker.close()
            cp.stop()


def _wait_generation(src: ApiSource, generation: int, timeout: float = 10) -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        got = src.poll(0)
        if got is not None:
            last = got[1]
            if last.generation >= generation:
                return last
        time.sleep(0.02)
    raise AssertionError(f"generation {generation} not reached; last {getattr(last, 'generation', None)}")


def test_informers_list_watch_and_relist_after_410(setup, caplog) -> None:
    cp, src = setup
    caplog.set_level(logging.INFO, logger="refproxier.apiwatch")
    cp.put(model.node_object("node1", ["192.0.2.11"]), model.node_object("node2", ["192.0.2.12"]),
           svc("a"), svc("other", {"service.kubernetes.io/service-proxy-name": "x"}))
    loaded = _wait_generation(src, cp.publish())
    assert list(loaded.cluster.services) == [("ns1", "a")]  # kube-proxy's label selector
    assert list(loaded.cluster.nodes) == ["node1"]  # metadata.name=<hostname>
    # A bookmark-only change for Services (a Node changed) still advances the generation.
    cp.put(model.node_object("node2", ["192.0.2.13"]))
    _wait_generation(src, cp.publish())
    # Five changes in one publish overflow the 2-event history: live watches get 410.
    for i in range(5):
        cp.put(svc(f"b{i}"))
    loaded = _wait_generation(src, cp.publish())
    assert sorted(loaded.cluster.services) == [("ns1", n) for n in ["a", "b0", "b1", "b2", "b3", "b4"]]
    assert any("410" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    cp.remove("Service", "ns1", "a")
    loaded = _wait_generation(src, cp.publish())
    assert ("ns1", "a") not in loaded.cluster.services


def test_the_server_restarts_with_its_objects_and_informers_resume(setup) -> None:
    import socket
    from urllib.parse import urlsplit

    cp, src = setup
    cp.put(model.node_object("node1", ["192.0.2.11"]), svc("a"))
    before = _wait_generation(src, cp.publish())
    netns = cp._bind[0]
    url = urlsplit(cp.url)
    lan = NetnsThread(netns)
    try:
        cp.stop_server()
        with pytest.raises(ConnectionRefusedError):
            lan.call(socket.create_connection, (url.hostname, url.port), 2)
        # the informers meanwhile keep the last state
        assert src.poll(0)[1].generation == before.generation
        cp.start_server()
        lan.call(socket.create_connection, (url.hostname, url.port), 2).close()
    finally:
        lan.close()
    # resourceVersions go on from where they were; the informers catch up with a change
    cp.put(svc("b"))
    gen = cp.publish()
    assert gen > before.generation
    loaded = _wait_generation(src, gen, timeout=15)
    assert sorted(loaded.cluster.services) == [("ns1", "a"), ("ns1", "b")]
