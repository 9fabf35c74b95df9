"""The pure parts the daemon drives, behind one small interface (``Backend``), so that
the loop's mechanics can be tested with stand-ins.

``DefaultBackend`` is the real one for kube-proxy's iptables mode: the state directory
(``servicemodel``) in, ``refproxier.proxystate`` and ``refproxier.iptables`` out;
``refproxier.nft_exec.NftBackend`` is the nftables mode's. ``LoadedState`` is one
generation of input, from ``state.yaml`` or from ``refproxier.apiwatch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from refproxier import iptables
from refproxier.config import ProxierConfig
from refproxier.conntrack import UdpServicePort
from refproxier.healthcheck import HealthCheckTarget
from refproxier.memo import PortMemo
from refproxier.proxystate import ProxyState, build_proxy_state, changed_services
from servicemodel import statedir
from servicemodel.cluster import ClusterState
from servicemodel.load import ModelError, load_text


@dataclass
class LoadedState:
    """One generation of the state directory."""

    generation: int | None
    cluster: ClusterState


class StateLoadError(Exception):
    pass


class Backend(Protocol):
    def load(self, state_dir: str) -> LoadedState: ...
    def build(self, cluster: Any, config: ProxierConfig) -> Any: ...
    def changed(self, old: Any | None, new: Any) -> set[str] | None: ...
    def render(
        self, proxy_state: Any, config: ProxierConfig, *, changed: set[str] | None,
        existing_nat_chains: frozenset[str],
    ) -> str: ...
    def jump_rules(self, config: ProxierConfig) -> list[tuple[str, str, list[str]]]: ...
    def problems(self, proxy_state: Any) -> list[str]: ...
    def udp_services(self, proxy_state: Any) -> set[str]: ...
    def udp_ports(self, proxy_state: Any) -> list[UdpServicePort]: ...
    def health_checks(self, proxy_state: Any) -> dict[int, HealthCheckTarget]: ...


class DefaultBackend:
    """The real pure parts: servicemodel + refproxier.proxystate + refproxier.iptables.
    Service keys are ``"namespace/name"`` strings (``ServicePortInfo.service_key``)."""

    def __init__(self) -> None:
        # Ports equal to the last sync's reuse their rules (refproxier.memo).
        self._memo: PortMemo = PortMemo()

    def load(self, state_dir: str) -> LoadedState:
        path = statedir.state_path(state_dir)
        try:
            text = path.read_text()
        except OSError as e:
            raise StateLoadError(f"cannot read {path}: {e.strerror or e}") from None
        try:
            # Parse the text we read (not the path again): the file may be replaced at any
            # moment, and the generation must belong to these very objects.
            objs = load_text(text, source=str(path))
            generation = statedir.read_generation(text)
        except (ModelError, ValueError, TypeError) as e:
            raise StateLoadError(str(e)) from None
        except Exception as e:  # yaml.YAMLError and whatever a malformed object raises
            raise StateLoadError(f"{path}: {type(e).__name__}: {e}") from None
        return LoadedState(generation, ClusterState.from_objects(objs, generation=generation))

    def build(self, cluster: ClusterState, config: ProxierConfig) -> ProxyState:
        return build_proxy_state(cluster, config)

    def changed(self, old: ProxyState | None, new: ProxyState) -> set[str] | None:
        # kube-proxy decides on the derived service/endpoint info, not on raw objects: an
        # edit that changes nothing a rule depends on (a label, a resourceVersion) is no
        # change.
        return changed_services(old, new)

    def render(
        self, proxy_state: ProxyState, config: ProxierConfig, *, changed: set[str] | None,
        existing_nat_chains: frozenset[str],
    ) -> str:
        return iptables.render(
            proxy_state, config, changed=changed, existing_nat_chains=existing_nat_chains, memo=self._memo
        )

    def jump_rules(self, config: ProxierConfig) -> list[tuple[str, str, list[str]]]:
        return [jump_rule_tuple(j) for j in iptables.jump_rules(config)]

    def problems(self, proxy_state: ProxyState) -> list[str]:
        return [str(p) for p in proxy_state.problems]

    def udp_services(self, proxy_state: ProxyState) -> set[str]:
        return {sp.service_key for sp in proxy_state.service_ports if sp.protocol == "UDP"}

    def udp_ports(self, proxy_state: ProxyState) -> list[UdpServicePort]:
        return [
            UdpServicePort(
                sp.port_name_string, tuple(sp.destination_ips), sp.port, sp.node_port,
                frozenset(sp.serving_endpoint_ips), frozenset(sp.serving_endpoints),
            )
            for sp in proxy_state.udp_service_ports()
        ]

    def health_checks(self, proxy_state: ProxyState) -> dict[int, HealthCheckTarget]:
        return {
            hc.node_port: HealthCheckTarget(hc.namespace, hc.name, hc.local_endpoints)
            for hc in proxy_state.health_checks()
        }


def jump_rule_tuple(j: Any) -> tuple[str, str, list[str]]:
    """(table, built-in chain, args) from a ``refproxier.iptables.JumpRule``."""
    return str(j.table), str(j.chain), [str(a) for a in j.args]
