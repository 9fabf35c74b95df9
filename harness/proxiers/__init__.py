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
    }
)


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
    )


# kube-proxy's nftables mode differs visibly (kube-proxy-notes.md, section 5): no localhost
# NodePorts, no ct-state-INVALID drop in the forward path.
KUBE_PROXY_NFTABLES_CAPABILITIES = KUBE_PROXY_IPTABLES_CAPABILITIES - {"localhost-nodeports", "invalid-drop"}


def reference_nft() -> ProxierSpec:
    """The reference proxier in kube-proxy's nftables mode."""
    return ProxierSpec(
        name="reference-nft",
        command=REFERENCE_COMMAND + " --proxy-mode nftables --service-cidr {service_cidr}",
        capabilities=KUBE_PROXY_NFTABLES_CAPABILITIES,
        description="refproxier, kube-proxy nftables mode",
        version=_refproxier_version(),
        netfilter="nftables",
    )


BUILTIN: dict[str, Callable[[], ProxierSpec]] = {"reference": reference, "reference-nft": reference_nft}


def resolve(name: str | None, command: str | None, capabilities: str | None,
            version: str | None = None) -> ProxierSpec:
    """Turn the plugin's options into a ProxierSpec, with errors that say what to do."""
    if command:
        caps = frozenset(c.strip() for c in (capabilities or "").split(",") if c.strip())
        return ProxierSpec(name=name or "custom", command=command, capabilities=caps,
                           version=version)
    name = name or "reference"
    factory = BUILTIN.get(name)
    if factory is None:
        for ep in entry_points(group="svc_conformance.proxiers"):
            if ep.name == name:
                factory = ep.load()
                break
    if factory is None:
        known = sorted(set(BUILTIN) | {ep.name for ep in entry_points(group="svc_conformance.proxiers")})
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
