"""Fixtures for the harness's own network tests (topology, echo server, probes)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: network namespaces (sudo bash run.sh tests)"
)


@pytest.fixture(scope="module")
def probe_topology() -> Iterator[object]:
    """A small routed topology for probe tests (module scope; depends on: root).

    Nodes ``node-a``/``node-b``, client ``client`` with 2 secondary addresses, pod ``target``
    on node-b (tcp+udp 8080). Tests that add rules in ``target`` use ports no other test
    uses. Example::

        def test_x(probe_topology):
            probe(probe_topology.clients["client"], probe_topology.pods["target"].ip, 8080)
    """
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    from harness.topology.netns import Topology
    from harness.topology.spec import ClientSpec, NodeSpec, TopologySpec

    spec = TopologySpec(nodes=[NodeSpec("node-a"), NodeSpec("node-b")],
                        clients=[ClientSpec("client", extra_addresses=2)])
    with Topology(spec) as topo:
        topo.add_pod("target", "node-b")
        yield topo
