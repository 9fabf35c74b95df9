"""Configuration of the reference proxier, mirroring kube-proxy's flags."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class ProxierConfig:
    """One single-stack proxier instance, as kube-proxy's ``NewProxier`` sees it.

    ``localhost_nodeports`` is forced to False after construction unless nodeport_addresses
    is empty or contains IPv4 loopback, and always for IPv6, as kube-proxy does.
    """

    hostname: str
    node_ips: tuple[str, ...] = ()
    ip_family: Literal[4, 6] = 4
    cluster_cidrs: tuple[str, ...] = ()  # empty: no local-traffic detector
    masquerade_all: bool = False
    masquerade_bit: int = 14
    nodeport_addresses: tuple[str, ...] = ()  # CIDRs; empty: all local addresses
    localhost_nodeports: bool = True
    random_fully: bool = True  # iptables supports --random-fully
    iptables_mode: Literal["legacy", "nft", "auto"] = "auto"
    sync_period: float = 30.0
    min_sync_period: float = 1.0
    # kube-proxy's proxyutil.FullSyncPeriod: without a reason (a failed sync, flushed
    # rules, a restart) a full sync runs this long after the last one; every other
    # sync is partial. A constant in kube-proxy, not a flag.
    full_sync_period: float = 3600.0
    # The sysctl net.netfilter.nf_conntrack_tcp_be_liberal is non-zero: kube-proxy then
    # skips the KUBE-FORWARD INVALID drop rule.
    conntrack_tcp_be_liberal: bool = False
    # kube-proxy's --conntrack-tcp-timeout-established and --conntrack-tcp-timeout-close-wait
    # (defaults 24h and 1h): written to the node namespace's nf_conntrack_tcp_timeout_*
    # sysctls at start (pkg/proxy/conntrack/sysctls.go); 0 leaves the kernel's value.
    conntrack_tcp_timeout_established: float = 86400.0
    conntrack_tcp_timeout_close_wait: float = 3600.0
    # The nfacct counters exist (kube-proxy adds "-m nfacct" matches only then).
    nfacct: bool = False
    # Local addresses of the node, used when nodeport_addresses is set (kube-proxy reads
    # them from the interfaces); empty means node_ips.
    local_addresses: tuple[str, ...] = field(default=())
    # Service CIDRs (kube-proxy learns them from ServiceCIDR objects). nftables mode drops
    # traffic to unallocated addresses inside them; empty: no such rule.
    service_cidrs: tuple[str, ...] = ()
    proxy_mode: Literal["iptables", "nftables"] = "iptables"
    # kube-proxy's --healthz-bind-address (/healthz, /livez); empty: no health server
    healthz_bind_address: str = "0.0.0.0:10256"

    def __post_init__(self) -> None:
        if self.ip_family not in (4, 6):
            raise ValueError(f"ip_family must be 4 or 6, not {self.ip_family!r}")
        if not 0 <= self.masquerade_bit <= 31:
            raise ValueError(f"masquerade_bit must be in [0, 31], not {self.masquerade_bit}")
        if self.proxy_mode not in ("iptables", "nftables"):
            raise ValueError(f"proxy_mode must be iptables or nftables, not {self.proxy_mode!r}")
        for cidr in (*self.cluster_cidrs, *self.nodeport_addresses, *self.service_cidrs):
            ipaddress.ip_network(cidr, strict=False)  # raises ValueError naming the value
        for ip in (*self.node_ips, *self.local_addresses):
            ipaddress.ip_address(ip)
        # As kube-proxy's NewProxier: the flag only takes effect where it can work.
        object.__setattr__(self, "localhost_nodeports", self._localhost_nodeports_allowed())

    # Derived values -------------------------------------------------------------------

    @property
    def is_ipv6(self) -> bool:
        return self.ip_family == 6

    @property
    def masquerade_mark(self) -> str:
        """The mark as kube-proxy prints it with ``%#08x`` (0x4000 for bit 14)."""
        return f"{1 << self.masquerade_bit:#08x}"

    @property
    def family_cluster_cidrs(self) -> tuple[str, ...]:
        return tuple(c for c in self.cluster_cidrs if ipaddress.ip_network(c, strict=False).version == self.ip_family)

    @property
    def family_service_cidrs(self) -> tuple[str, ...]:
        return tuple(
            str(ipaddress.ip_network(c, strict=False))
            for c in self.service_cidrs
            if ipaddress.ip_network(c, strict=False).version == self.ip_family
        )

    @property
    def family_nodeport_cidrs(self) -> tuple[str, ...]:
        return tuple(
            c for c in self.nodeport_addresses if ipaddress.ip_network(c, strict=False).version == self.ip_family
        )

    @property
    def nodeport_match_all(self) -> bool:
        """True when NodePorts are accepted on every local address (kube-proxy MatchAll)."""
        cidrs = self.family_nodeport_cidrs
        if not cidrs:
            return True
        return any(ipaddress.ip_network(c, strict=False).prefixlen == 0 for c in cidrs)

    def _localhost_nodeports_allowed(self) -> bool:
        if not self.localhost_nodeports or self.is_ipv6:
            return False
        cidrs = self.family_nodeport_cidrs
        if not cidrs:
            return True
        lo = ipaddress.ip_address("127.0.0.1")
        return any(lo in ipaddress.ip_network(c, strict=False) for c in cidrs)

    @property
    def primary_node_ip(self) -> str | None:
        """The first node IP of this family (kube-proxy's ``nodeIP``)."""
        for ip in self.node_ips:
            if ipaddress.ip_address(ip).version == self.ip_family:
                return ip
        return None

    def nodeport_ips(self) -> list[str]:
        """Local addresses inside nodeport_addresses (when not match-all), in CIDR order."""
        addrs = list(self.local_addresses or self.node_ips)
        addrs.append("127.0.0.1" if self.ip_family == 4 else "::1")  # lo is always local
        out: list[str] = []
        for cidr in self.family_nodeport_cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            for a in addrs:
                ip = ipaddress.ip_address(a)
                if ip.version == self.ip_family and ip in net and a not in out:
                    out.append(a)
        return out
