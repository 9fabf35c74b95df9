"""What each service port rendered to in the last sync, for the next one to reuse.

Both renderers turn every service port into its rules with a pure function
(``iptables.service_port_rules``, ``nftables.service_port_objects``). kube-proxy computes
them again on every sync; at 10,000 Services that is most of the time a one-endpoint
update takes to render (1.4 s for iptables, 2.3 s for nftables on this VM) although one
Service changed. A :class:`PortMemo` keeps each port's result with the port it came from
and hands it back while the port is equal (``ServicePortInfo`` is a frozen dataclass: the
comparison covers every field the rules depend on) and the render settings are the same.

The daemon owns one memo per renderer and passes it in; one-off renders (the CLI, golden
tests) pass none and compute everything, so a test that monkeypatches a rule function
can never be served a result computed before the patch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from types import ModuleType
from typing import Generic, TypeVar

from refproxier.proxystate import ServicePortInfo

R = TypeVar("R")


def module_functions(module: ModuleType) -> tuple[object, ...]:
    """Every module-level callable of ``module``: part of a memo's settings, so that a
    rule function monkeypatched at run time (the fault-injection points) invalidates it."""
    return tuple(v for v in vars(module).values() if callable(v))


class PortMemo(Generic[R]):
    """Results of one pure per-port function, kept from one sync to the next."""

    def __init__(self) -> None:
        self._settings: object = None
        self._entries: dict[tuple[str, str, str], tuple[ServicePortInfo, R]] = {}
        self.hits = self.misses = 0  # of the last call, for tests and benchmarks

    def results(
        self, settings: Hashable, ports: Iterable[ServicePortInfo], compute: Callable[[ServicePortInfo], R]
    ) -> list[R]:
        """``[compute(sp) for sp in ports]``, reusing the last call's result for every port
        equal to one seen then, under equal ``settings`` (the config and the rule
        functions). Only the ports of this call are kept."""
        old = self._entries if settings == self._settings else {}
        new: dict[tuple[str, str, str], tuple[ServicePortInfo, R]] = {}
        out: list[R] = []
        hits = 0
        for sp in ports:
            key = (sp.service_key, sp.port_name, sp.protocol)
            hit = old.get(key)
            if hit is not None and (hit[0] is sp or hit[0] == sp):
                result = hit[1]
                hits += 1
            else:
                result = compute(sp)
            new[key] = (sp, result)
            out.append(result)
        self._settings, self._entries = settings, new
        self.hits, self.misses = hits, len(out) - hits
        return out
