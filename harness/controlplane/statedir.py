"""The state-directory control plane: objects held here, published as numbered generations."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from servicemodel import statedir


def object_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (obj["kind"], meta.get("namespace") or "", meta["name"])


#: the harness's own namespace (the sentinel Service): its objects are published after all
#: others, so a proxier that has applied them has applied everything published with them
SYSTEM_NAMESPACE = "svcconf-system"


#: the order a cluster's controllers write in: a Service before its EndpointSlices (the
#: EndpointSlice controller follows the Service; garbage collection deletes the slices after
#: the Service), so proxiers watching both see changes in the order they would in a cluster
KIND_ORDER = {"Node": 0, "ServiceCIDR": 1, "Service": 2, "EndpointSlice": 3}


def publish_order(key: tuple[str, str, str]) -> tuple[bool, int, tuple[str, str, str]]:
    return (key[1] == SYSTEM_NAMESPACE, KIND_ORDER.get(key[0], 9), key)


class SyncTimeout(TimeoutError):
    """A proxier did not acknowledge a generation in time."""


class ObjectStore:
    """What every control plane shares: the objects to publish, keyed by (kind, namespace,
    name), and waiting for the nodes' acknowledgements (``applied/<node>`` in the state
    directory). Subclasses set ``self._objects`` and ``self.state_dir`` and say in
    ``_not_applied`` what a proxier that never acknowledges should check."""

    _objects: dict[tuple[str, str, str], dict[str, Any]]
    state_dir: Path

    def objects(self) -> list[dict[str, Any]]:
        order = {"Node": 0, "Service": 1, "EndpointSlice": 2}
        return sorted(self._objects.values(), key=lambda o: (order.get(o["kind"], 9), object_key(o)))

    def put(self, *objs: dict[str, Any]) -> None:
        for obj in objs:
            self._objects[object_key(obj)] = obj

    def remove(self, kind: str, namespace: str, name: str) -> None:
        self._objects.pop((kind, namespace, name), None)

    def remove_where(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        for key in [k for k, o in self._objects.items() if predicate(o)]:
            del self._objects[key]

    def applied(self, node: str) -> int | None:
        return statedir.read_applied(self.state_dir, node)

    def wait_applied(self, generation: int, nodes: Iterable[str], timeout: float,
                     check_alive: Callable[[], None] = lambda: None) -> float:
        """Block until every node reports ``generation``; returns seconds waited."""
        nodes = list(nodes)
        start = time.monotonic()
        deadline = start + timeout
        delay = 0.002
        while True:
            behind = [n for n in nodes if (self.applied(n) or 0) < generation]
            if not behind:
                return time.monotonic() - start
            check_alive()
            if time.monotonic() > deadline:
                seen = {n: self.applied(n) for n in behind}
                raise SyncTimeout(self._not_applied(generation, behind, seen, timeout))
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _not_applied(self, generation: int, behind: list[str], seen: dict[str, int | None],
                     timeout: float) -> str:
        raise NotImplementedError


class StateDirControlPlane(ObjectStore):
    """Holds the cluster's Services, EndpointSlices and Nodes; each change is a generation.

    ``publish`` writes the whole state atomically; ``wait_applied`` waits for every node's
    acknowledgement (``applied/<node>``), checking the proxiers are still alive.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.generation = 0
        self.published_at: dict[int, float] = {}

    def publish(self) -> int:
        self.generation += 1
        statedir.write_state(self.state_dir, self.objects(), self.generation)
        self.published_at[self.generation] = time.monotonic()
        return self.generation

    def _not_applied(self, generation: int, behind: list[str], seen: dict[str, int | None],
                     timeout: float) -> str:
        return (f"generation {generation} was not applied within {timeout:.1f}s by "
                f"node(s) {', '.join(behind)} (last applied: {seen}); state file: "
                f"{statedir.state_path(self.state_dir)}. Check the proxier log, or raise "
                "--timeout-scale if the machine is slow.")
