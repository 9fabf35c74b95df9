"""The fault-injection points take effect when monkeypatched (module docstring), and the
tracer notices: each replacement below is a kube-proxy bug a conformance test must catch."""

from __future__ import annotations

import pytest

import refproxier.nftables as nft
from refproxier.nftables import render_nft
from tests.unit.refproxier.builders import NODE, ep, eps_slice, port, proxy_state, service
from tests.unit.refproxier_nft.builders import (
    TEST_EXTERNAL_CLIENT,
    TEST_NODE_IP,
    TEST_NODE_IPS,
    nft_config,
)
from tests.unit.refproxier_nft.nftscript import load, trace


def _trace(objs: list[dict], src: str, dst: str, dport: int) -> tuple[str, bool]:
    cfg = nft_config()
    _, out, masq = trace(load(render_nft(proxy_state(*objs, config=cfg), cfg)), src, "tcp", dst, dport, TEST_NODE_IPS)
    return out, masq


NO_EPS = [service("ns1", "svc1", "172.30.0.41")]
TWO_EPS = [service("ns1", "svc1", "172.30.0.41"), eps_slice("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.0.2")])]
ETP_CLUSTER = [
    service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type="NodePort"),
    eps_slice("ns1", "svc1", [ep("10.180.0.1", NODE)]),
]


@pytest.mark.parametrize(
    ("point", "replacement", "objs", "flow", "correct"),
    [
        ("no_endpoints_verdict", lambda ctx, sp: "drop", NO_EPS, ("10.0.0.2", "172.30.0.41", 80), ("REJECT", False)),
        ("loadbalancing_rule",
         lambda ctx, sp, chain, eps: f"numgen random mod 1 vmap {{ 0 : goto {nft.endpoint_chain(sp, eps[0])} }}",
         TWO_EPS, ("10.0.0.2", "172.30.0.41", 80), ("10.180.0.1:80, 10.180.0.2:80", False)),
        ("hairpin_masquerade_rule", lambda ctx, sp, e: "ip saddr 192.0.2.255 jump mark-for-masquerade",
         TWO_EPS, ("10.180.0.1", "172.30.0.41", 80), ("10.180.0.1:80, 10.180.0.2:80", True)),
        ("external_chain_rules", lambda ctx, sp, has: [f"goto {nft.Names.of(sp).cluster}"],
         ETP_CLUSTER, (TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001), ("10.180.0.1:80", True)),
        ("cluster_ips_check_rules", lambda ctx: [], NO_EPS, ("10.0.0.2", "172.30.0.50", 80), ("DROP", False)),
    ],
)
def test_fault_point_changes_the_traced_outcome(monkeypatch, point, replacement, objs, flow, correct):
    assert _trace(objs, *flow) == correct
    monkeypatch.setattr(nft, point, replacement)
    assert _trace(objs, *flow) != correct
