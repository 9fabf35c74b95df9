"""The proxier-under-test contract: what a proxier is, what it declares, how it is run.

A proxier is a command started once per node inside that node's network namespace, with
placeholders filled by the harness (see ``PLACEHOLDERS``). It reads Kubernetes objects from
``{state_dir}`` (``servicemodel.statedir``), or with ``--control-plane api`` from the API
server ``{kubeconfig}`` names (empty otherwise: write ``--flag={kubeconfig}`` so an empty
value stays one argument), and may acknowledge the generation it applied.

Adapters: ``--proxier NAME`` picks a ``ProxierSpec`` from ``BUILTIN`` or from the
``svc_conformance.proxiers`` entry-point group, so a proxier project can ship its own spec
(a callable returning a ``ProxierSpec``). ``--proxier-cmd`` runs any command with declared
capabilities (``--proxier-capabilities``).
"""

from __future__ import annotations

import shlex
import string
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points

from harness.suite import locate as locate_suite

PLACEHOLDERS = (
    "node",
    "node_ip",
    "state_dir",
    "kubeconfig",
    "cluster_cidr",
    "service_cidr",
    "python",
    "iptables",
)

# Capabilities a proxier may declare. A test that needs an undeclared one is skipped with
# the reason; a declared one that does not work fails.
CAPABILITIES: dict[str, str] = {
    "acks": "writes applied/<node> with the generation it applied (else the harness probes)",
    "localhost-nodeports": "NodePorts answer on 127.0.0.1 from the node itself (kube-proxy iptables)",
    "masquerade-mark": "marks flows to be masqueraded with kube-proxy's 0x4000 mark",
    "affinity": "sessionAffinity: ClientIP",
    "reject-no-endpoints": "actively refuses (ICMP port unreachable) Services without endpoints",
    "health-check-nodeport": "serves healthCheckNodePort for externalTrafficPolicy Local",
    "ipv6": "IPv6 Services",
    "dual-stack": "dual-stack Services (clusterIPs of both families) on dual-stack nodes, one "
                  "process per node (node_ip, cluster_cidr, service_cidr are comma lists)",
    "sctp": "SCTP Services",
    "udp-conntrack-cleanup": "clears stale UDP conntrack entries when endpoints change",
    "invalid-drop": "drops forwarded packets in conntrack state INVALID (kube-proxy's KUBE-FORWARD rule)",
    "resync-on-flush": "re-creates its rules after someone flushes them (kube-proxy's canary chains)",
    "topology-hints": "uses only the endpoints hinted for its node's zone (hints.forZones)",
    "node-hints": "uses only the endpoints hinted for its node (hints.forNodes, PreferSameNode)",
    "lb-ip-mode": "leaves LoadBalancer ingress IPs with ipMode Proxy to the load balancer",
    "proxier-healthz": "serves kube-proxy's /healthz and /livez on port 10256 of the node",
    "clusterip-check": "refuses ports a ClusterIP does not expose and drops unallocated addresses "
                       "of the ServiceCIDRs (kube-proxy nftables cluster-ips-check)",
    "nodeport-primary-only": "by default accepts NodePorts on the node's primary addresses only "
                             "(kube-proxy nftables --nodeport-addresses=primary)",
    "other-mode-cleanup": "removes at start the rules its other mode (iptables/nftables) left "
                          "(kube-proxy's platformCleanup)",
    "conntrack-tcp-timeouts": "sets kube-proxy's conntrack TCP timeouts in the node's network "
                              "namespace at start (CLOSE_WAIT 1 h, established 24 h)",
}

KUBE_PROXY_IPTABLES_CAPABILITIES = frozenset(
    {
        "acks",
        "localhost-nodeports",
        "masquerade-mark",
        "affinity",
        "reject-no-endpoints",
        "health-check-nodeport",
        "udp-conntrack-cleanup",
        "invalid-drop",
        "resync-on-flush",
        "sctp",
        "ipv6",
        "dual-stack",
        "topology-hints",
        "node-hints",
        "lb-ip-mode",
        "proxier-healthz",
        "other-mode-cleanup",
        "conntrack-tcp-timeouts",
    }
)

# The first kube-proxy release with each feature on by default (its feature gate's beta or
# GA): an older release runs without it and skips the checks. Runs of v1.31.14, v1.33.13,
# v1.36.3 and v1.37.2: docs/service-features-by-release.md.
KUBE_PROXY_SINCE: dict[str, tuple[int, int]] = {
    "topology-hints": (1, 24),   # TopologyAwareHints beta, on by default
    "node-hints": (1, 34),       # PreferSameTrafficDistribution beta (KEP-3015); GA in v1.35
    "lb-ip-mode": (1, 30),       # LoadBalancerIPMode beta (KEP-1860)
    "proxier-healthz": (1, 31),  # KubeProxyDrainingTerminatingNodes GA (KEP-3836): /livez, node drain
    # ServiceCIDR objects read by default once MultiCIDRServiceAllocator is GA: v1.31.14's
    # nftables mode refuses unexposed ClusterIP ports but routes unallocated addresses on
    "clusterip-check": (1, 33),
    # the other mode's rules removed at start (platformCleanup): seen in both modes of
    # v1.31.14, v1.33.13, v1.36.3, v1.37.2; older releases unverified
    "other-mode-cleanup": (1, 31),
}


class ProxierConfigError(ValueError):
    """A proxier selection or command that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class ProxierSpec:
    """A proxier under test: a command template and the capabilities it declares."""

    name: str
    command: str
    capabilities: frozenset[str] = field(default_factory=frozenset)
    description: str = ""
    #: what the proxier says it is (reports print it next to the command)
    version: str | None = None
    #: "iptables" (the ``--iptables`` flavour applies) or "nftables" (native nft tables;
    #: the flavour does not apply and reports do not claim one)
    netfilter: str = "iptables"
    #: reads only from a Kubernetes API (a ``--control-plane`` other than statedir)
    needs_api: bool = False
    #: the upstream release it is (``v1.37.2``) when it is a build of kube-proxy
    release: str | None = None
    #: its known-gaps file, used when ``--known-gaps`` is not given
    known_gaps: str | None = None
    #: takes kube-proxy's flag names (``--masquerade-all``, ``--nodeport-addresses=...``),
    #: so a scenario's proxier settings can be appended to its command
    kube_proxy_flags: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.capabilities) - set(CAPABILITIES)
        if unknown:
            raise ProxierConfigError(
                f"proxier {self.name!r} declares unknown capabilities {sorted(unknown)}; "
                f"known: {', '.join(sorted(CAPABILITIES))}"
            )
        try:
            fields = {
                name for _, name, _, _ in string.Formatter().parse(self.command) if name
            }
        except ValueError as exc:
            raise ProxierConfigError(f"proxier command {self.command!r}: {exc}") from None
        bad = fields - set(PLACEHOLDERS)
        if bad:
            raise ProxierConfigError(
                f"proxier command {self.command!r} uses unknown placeholders "
                f"{sorted('{' + b + '}' for b in bad)}; available: "
                + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            )

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def argv(self, **values: str) -> list[str]:
        """The command for one node, placeholders filled, split like a shell would."""
        return shlex.split(self.command.format(**{p: values.get(p, "") for p in PLACEHOLDERS}))

    def with_capabilities(self, capabilities: Iterable[str]) -> ProxierSpec:
        return replace(self, capabilities=frozenset(capabilities))


REFERENCE_COMMAND = (
    # --kubeconfig={kubeconfig}: the API with --control-plane api; empty (no API) otherwise,
    # which refproxier reads as "use state.yaml" (the = form keeps the argv well formed).
    "{python} -m refproxier run --state-dir {state_dir} --kubeconfig={kubeconfig} "
    "--hostname-override {node} "
    "--node-ip {node_ip} --cluster-cidr {cluster_cidr} --iptables {iptables} "
    # The suite publishes many small changes; kube-proxy's 1 s rate limit only slows it.
    "--min-sync-period 0"
)


def _refproxier_version() -> str:
    from refproxier import version_string

    return version_string()


def reference() -> ProxierSpec:
    """The included reference proxier (kube-proxy's iptables mode in Python)."""
    return ProxierSpec(
        name="reference",
        command=REFERENCE_COMMAND,
        capabilities=KUBE_PROXY_IPTABLES_CAPABILITIES,
        description="refproxier, kube-proxy iptables mode",
        version=_refproxier_version(),
        kube_proxy_flags=True,
    )


# kube-proxy's nftables mode differs visibly (kube-proxy-notes.md, section 5): no localhost
# NodePorts, no ct-state-INVALID drop in the forward path.
KUBE_PROXY_NFTABLES_CAPABILITIES = (
    KUBE_PROXY_IPTABLES_CAPABILITIES - {"localhost-nodeports", "invalid-drop"}) | {"clusterip-check", "nodeport-primary-only"}


def reference_nft() -> ProxierSpec:
    """The reference proxier in kube-proxy's nftables mode."""
    return ProxierSpec(
        name="reference-nft",
        command=REFERENCE_COMMAND + " --proxy-mode nftables --service-cidr {service_cidr}",
        capabilities=KUBE_PROXY_NFTABLES_CAPABILITIES,
        description="refproxier, kube-proxy nftables mode",
        version=_refproxier_version(),
        netfilter="nftables",
        kube_proxy_flags=True,
    )


# Real kube-proxy, built from its Go module (harness.kubebins). It writes no
# acknowledgement, so the harness waits on its sentinel Service; it reads only from an API
# server, so it runs over an API control plane.
KUBE_PROXY_COMMAND = (
    # The iptables flavour is the one the "iptables" on its PATH is (kube-proxy runs
    # whatever that is): a directory of links to the chosen flavour comes first.
    "env PATH={shims}/{{iptables}}:/usr/sbin:/usr/bin:/sbin:/bin "
    "{binary} --kubeconfig={{kubeconfig}} --hostname-override={{node}} --proxy-mode={mode} "
    "--cluster-cidr={{cluster_cidr}} "
    # No global side effects from a node namespace: a non-zero conntrack max makes it
    # write /sys/module/nf_conntrack/parameters/hashsize, which is the host's.
    "--conntrack-max-per-core=0 --conntrack-min=0 "
    # Its health and metrics servers, at their defaults: inside the node namespace.
    "--healthz-bind-address=0.0.0.0:10256 --metrics-bind-address=127.0.0.1:10249 "
    # The suite publishes many small changes; the 1 s rate limit only slows it down.
    "--iptables-min-sync-period=0s --oom-score-adj=0 --v=2"
)


# kube-proxy before v1.25 sent packets to drop to KUBE-MARK-DROP, a nat chain the kubelet
# owned (pkg/kubelet/kubelet_network_linux.go: MARK 0x8000, and a filter KUBE-FIREWALL
# dropping marked packets, jumped to from INPUT and OUTPUT); v1.19 does not even create it,
# and its whole iptables-restore fails without it. On a node without a kubelet the adapter
# writes the kubelet's rules first, as a kubelet of that release would have, then execs
# kube-proxy. (KEP-3178 moved the drop into kube-proxy in v1.25.)
KUBELET_DROP_CHAINS_UNTIL = (1, 25)
KUBELET_DROP_CHAINS = (
    "sh -c '"
    "for ipt in iptables ip6tables; do "
    "$ipt -w -t nat -N KUBE-MARK-DROP 2>/dev/null; "
    "$ipt -w -t nat -C KUBE-MARK-DROP -j MARK --or-mark 0x00008000 2>/dev/null || "
    "$ipt -w -t nat -A KUBE-MARK-DROP -j MARK --or-mark 0x00008000; "
    "$ipt -w -N KUBE-FIREWALL 2>/dev/null; "
    "$ipt -w -C KUBE-FIREWALL -m mark --mark 0x00008000/0x00008000 -j DROP 2>/dev/null || "
    "$ipt -w -A KUBE-FIREWALL -m mark --mark 0x00008000/0x00008000 -j DROP; "
    "for c in INPUT OUTPUT; do $ipt -w -C $c -j KUBE-FIREWALL 2>/dev/null || "
    "$ipt -w -I $c -j KUBE-FIREWALL; done; "
    "done; exec \"$@\"' kubelet-drop-chains "
)


#: known-gaps files of the built-in adapters: ``<name>-<release>.yaml`` (in the repository
#: or in the installed wheel: harness.suite)
KNOWN_GAPS_DIR = locate_suite().known_gaps


class KubeProxyUnavailable(ProxierConfigError):
    """kube-proxy at the asked version is not built."""


def _kube_proxy(mode: str, version: str | None) -> ProxierSpec:
    from harness import kubebins

    version = version or kubebins.DEFAULT_VERSION
    try:
        binary = kubebins.locate("kube-proxy", version)
    except kubebins.BuildError as exc:
        raise KubeProxyUnavailable(str(exc)) from None
    shims = kubebins.iptables_shims()
    said = _binary_version(binary)
    v = kubebins.Version.parse(version)
    caps = set(KUBE_PROXY_IPTABLES_CAPABILITIES if mode == "iptables"
               else KUBE_PROXY_NFTABLES_CAPABILITIES) - {"acks"}
    if mode == "nftables":
        # Its nftables mode does not watch for its table being deleted: it is rebuilt at
        # the next change or hourly full sync (seen with v1.37.2; iptables mode has the
        # canary Monitor, kubernetes#129128 describes its limits).
        caps.discard("resync-on-flush")
    caps -= {c for c, since in KUBE_PROXY_SINCE.items() if (1, v.minor) < since}
    name = "kube-proxy" if mode == "iptables" else "kube-proxy-nft"
    gaps = KNOWN_GAPS_DIR / f"{name}-{v}.yaml"
    command = KUBE_PROXY_COMMAND.format(shims=shims, binary=binary, mode=mode)
    if (1, v.minor) < KUBELET_DROP_CHAINS_UNTIL and mode == "iptables":
        command = command.replace(f"{binary} ", KUBELET_DROP_CHAINS + f"{binary} ", 1)
    if v.minor < 18:
        # before v1.18 both bind addresses are an IP only (the ports are these defaults)
        command = command.replace("=0.0.0.0:10256", "=0.0.0.0").replace("=127.0.0.1:10249", "=127.0.0.1")
    if v.minor < 19:
        # v1.17 takes its IP family from --bind-address (default 0.0.0.0: IPv4) and refuses an
        # IPv6 cluster CIDR; the node's address says the family (seen: "clusterCIDR
        # fd00:10:244::/56 has incorrect IP version")
        command += " --bind-address={node_ip}"
    return ProxierSpec(
        name=name,
        command=command,
        capabilities=frozenset(caps),
        description=f"kube-proxy {v} ({mode} mode), built from k8s.io/kubernetes",
        version=said,
        netfilter="iptables" if mode == "iptables" else "nftables",
        needs_api=True,
        release=str(v),
        known_gaps=str(gaps) if gaps.is_file() else None,
        kube_proxy_flags=True,
    )


def _binary_version(binary: object) -> str:
    import subprocess

    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).strip() or "unknown"


def kube_proxy(version: str | None = None) -> ProxierSpec:
    """Real kube-proxy in iptables mode (flavour from ``--iptables``)."""
    return _kube_proxy("iptables", version)


def kube_proxy_nft(version: str | None = None) -> ProxierSpec:
    """Real kube-proxy in nftables mode."""
    return _kube_proxy("nftables", version)


BUILTIN: dict[str, Callable[[], ProxierSpec]] = {"reference": reference, "reference-nft": reference_nft}
#: adapters that take the release to run (``--kube-proxy-version``)
VERSIONED: dict[str, Callable[[str | None], ProxierSpec]] = {
    "kube-proxy": kube_proxy, "kube-proxy-nft": kube_proxy_nft}


def resolve(name: str | None, command: str | None, capabilities: str | None,
            version: str | None = None, kube_proxy_version: str | None = None) -> ProxierSpec:
    """Turn the plugin's options into a ProxierSpec, with errors that say what to do."""
    if command:
        caps = frozenset(c.strip() for c in (capabilities or "").split(",") if c.strip())
        return ProxierSpec(name=name or "custom", command=command, capabilities=caps,
                           version=version)
    name = name or "reference"
    if name in VERSIONED:
        spec = VERSIONED[name](kube_proxy_version)
        if capabilities is not None:
            spec = spec.with_capabilities(c.strip() for c in capabilities.split(",") if c.strip())
        return spec
    factory = BUILTIN.get(name)
    if factory is None:
        for ep in entry_points(group="svc_conformance.proxiers"):
            if ep.name == name:
                factory = ep.load()
                break
    if factory is None:
        known = sorted(set(BUILTIN) | set(VERSIONED) | {ep.name for ep in entry_points(group="svc_conformance.proxiers")})
        raise ProxierConfigError(
            f"--proxier {name!r} is not known; choose one of {known} or give --proxier-cmd"
        )
    spec = factory()
    if capabilities is not None:
        spec = spec.with_capabilities(c.strip() for c in capabilities.split(",") if c.strip())
    if version is not None:
        spec = replace(spec, version=version)
    return spec


def python_executable() -> str:
    return sys.executable
