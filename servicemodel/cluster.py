"""The cluster state a Service proxy consumes: Services, EndpointSlices and Nodes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import yaml
from lightkube.resources.core_v1 import Node, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.resources.networking_v1 import ServiceCIDR

from servicemodel import statedir
from servicemodel.load import KubeObject, ModelError, load_text
from servicemodel.names import SERVICE_NAME_LABEL

#: EndpointSlice label naming the owning Service.


@dataclass
class ClusterState:
    """One snapshot of the objects, with the generation it was published as (if any).

    ``services`` is keyed by (namespace, name); ``endpoint_slices`` by (namespace, slice
    name); ``nodes`` by name. A later object with the same key replaces an earlier one.
    """

    services: dict[tuple[str, str], Service] = field(default_factory=dict)
    endpoint_slices: dict[tuple[str, str], EndpointSlice] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    #: networking.k8s.io/v1 ServiceCIDRs by name
    service_cidrs: dict[str, ServiceCIDR] = field(default_factory=dict)
    generation: int | None = None

    @classmethod
    def from_objects(cls, objs: Iterable[KubeObject], generation: int | None = None) -> ClusterState:
        state = cls(generation=generation)
        for obj in objs:
            if isinstance(obj, Service):
                state.services[(obj.metadata.namespace, obj.metadata.name)] = obj
            elif isinstance(obj, EndpointSlice):
                state.endpoint_slices[(obj.metadata.namespace, obj.metadata.name)] = obj
            elif isinstance(obj, Node):
                state.nodes[obj.metadata.name] = obj
            elif isinstance(obj, ServiceCIDR):
                state.service_cidrs[obj.metadata.name] = obj
        return state

    @classmethod
    def from_state_dir(cls, state_dir: str | os.PathLike) -> ClusterState:
        """Read ``{state_dir}/state.yaml``; raises ModelError if it is missing or invalid."""
        path = statedir.state_path(state_dir)
        try:
            text = path.read_text()
        except OSError as e:
            raise ModelError(
                f"cannot read state file: {e.strerror or e}",
                source=str(path),
                hint="Publish a state with servicemodel.statedir.write_state first.",
            ) from None
        objs = load_text(text, source=str(path))
        try:
            generation = statedir.read_generation(text)
        except yaml.YAMLError:  # e.g. several documents: no generation
            generation = None
        return cls.from_objects(objs, generation=generation)

    def slices_for(self, namespace: str, name: str) -> list[EndpointSlice]:
        """The EndpointSlices labelled for Service namespace/name, sorted by slice name."""
        return [
            s
            for (ns, _), s in sorted(self.endpoint_slices.items())
            if ns == namespace and (s.metadata.labels or {}).get(SERVICE_NAME_LABEL) == name
        ]
