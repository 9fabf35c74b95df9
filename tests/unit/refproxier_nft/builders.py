"""kube-proxy's nftables NewFakeProxier config (pkg/proxy/nftables/proxier_test.go).

Pods 10.0.0.0/8 (fd00:10::/64), ServiceCIDR 172.30.0.0/16 (fd00:10:96::/112), node
test-node at 192.168.0.2 (2001:db8::1) with 192.168.1.2, 192.168.99.11 and 2001:db8:1::2
also local, --nodeport-addresses 192.168.0.2/32,2001:db8::1/128.
"""

from __future__ import annotations

from typing import Any

from refproxier.config import ProxierConfig
from tests.unit.refproxier.builders import NODE, NODE_IPS

TEST_NODE_IP = "192.168.0.2"
TEST_NODE_IP_ALT = "192.168.1.2"
TEST_NODE_IPV6 = "2001:db8::1"
TEST_NODE_IPV6_ALT = "2001:db8:1::2"
TEST_EXTERNAL_CLIENT = "203.0.113.2"
TEST_EXTERNAL_CLIENT_BLOCKED = "203.0.113.130"
# The tracer's "local" addresses (kube-proxy's testNodeIPs).
TEST_NODE_IPS = list(NODE_IPS)


def nft_config(ip_family: int = 4, **kw: Any) -> ProxierConfig:
    base: dict[str, Any] = dict(
        hostname=NODE,
        node_ips=(TEST_NODE_IP, TEST_NODE_IPV6) if ip_family == 4 else (TEST_NODE_IPV6, TEST_NODE_IP),
        ip_family=ip_family,
        cluster_cidrs=("10.0.0.0/8",) if ip_family == 4 else ("fd00:10::/64",),
        service_cidrs=("172.30.0.0/16",) if ip_family == 4 else ("fd00:10:96::/112",),
        nodeport_addresses=(f"{TEST_NODE_IP}/32", f"{TEST_NODE_IPV6}/128"),
        local_addresses=NODE_IPS,
        proxy_mode="nftables",
    )
    base.update(kw)
    return ProxierConfig(**base)
