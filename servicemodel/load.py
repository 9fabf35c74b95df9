"""Reading Kubernetes objects as ``kubectl get -o yaml`` prints them.

Accepted input: one or more YAML documents, ``kind: List`` (or any ``*List``) documents whose
``items`` are expanded, and JSON. ``status`` and ``metadata.managedFields`` may be present.

Objects are converted with lightkube's models (``lightkube.codecs.from_dict``): Services
(``v1``), EndpointSlices (``discovery.k8s.io/v1``) and Nodes (``v1``). Objects of any other
kind are skipped (a scenario file may carry Pods or ConfigMaps the proxier never sees); pass
``skipped=[]`` to collect a one-line description of each.

Every error is a :class:`ModelError` whose message names the source, the document (and line
when known), the object and the field, and says what to do.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml
from lightkube.codecs import from_dict
from lightkube.core.exceptions import LoadResourceError
from lightkube.resources.core_v1 import Node, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.resources.networking_v1 import ServiceCIDR

#: (apiVersion, kind) of the objects a Service proxy consumes.
PROXY_KINDS: dict[tuple[str, str], type] = {
    ("v1", "Service"): Service,
    ("discovery.k8s.io/v1", "EndpointSlice"): EndpointSlice,
    ("v1", "Node"): Node,
    # nftables-mode kube-proxy drops traffic to unallocated addresses of every ServiceCIDR
    ("networking.k8s.io/v1", "ServiceCIDR"): ServiceCIDR,
}

#: kinds that have no namespace
CLUSTER_SCOPED = frozenset({"Node", "ServiceCIDR"})

KubeObject = Service | EndpointSlice | Node | ServiceCIDR


class ModelError(ValueError):
    """Input that cannot be read as Kubernetes objects.

    ``str(err)`` is the whole message; the parts are kept as attributes for reports.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str,
        document: int | None = None,
        line: int | None = None,
        obj: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.document = document
        self.line = line
        self.obj = obj
        self.field = field
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
        if self.document is not None:
            where += f" (document {self.document})"
        parts = [where]
        if self.obj:
            parts.append(self.obj)
        if self.field:
            parts.append(f"field {self.field}")
        msg = ": ".join(parts) + f": {self.problem}"
        if self.hint:
            msg += f". {self.hint}"
        return msg


@dataclass
class _Doc:
    """One object candidate with where it came from."""

    data: Any
    document: int  # 1-based document index in the stream
    node: yaml.Node | None  # for line numbers; None for JSON input


def load_objects(
    path: str | os.PathLike, *, skipped: list[str] | None = None
) -> list[KubeObject]:
    """Services, EndpointSlices and Nodes from the file at ``path`` (YAML or JSON)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ModelError(
            f"cannot read file: {e.strerror or e}", source=str(p), hint="Check the path."
        ) from None
    return load_text(text, source=str(p), skipped=skipped)


def load_text(
    text: str, source: str = "<string>", *, skipped: list[str] | None = None
) -> list[KubeObject]:
    """Services, EndpointSlices and Nodes from YAML or JSON ``text``.

    ``source`` names the input in error messages. Objects of other kinds are skipped; when
    ``skipped`` is a list, a description of each skipped object is appended to it.
    """
    with gc_paused():
        docs = _parse(text, source)
        out: list[KubeObject] = []
        for doc in _flatten(docs, source):
            obj = _convert(doc, source, skipped)
            if obj is not None:
                out.append(obj)
    return out


def load_dict(data: dict[str, Any], source: str = "<object>") -> KubeObject | None:
    """One Service, EndpointSlice or Node from an already decoded object (e.g. a watch
    event's), validated as ``load_text`` does; None for another kind."""
    if not isinstance(data, dict):
        raise ModelError(f"expected an object, not {type(data).__name__}", source=source)
    return _convert(_Doc(data, 1, None), source, None)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a block that builds many long-lived objects.

    Reading a large state allocates millions of objects that all stay alive (nodes,
    dicts, models); every full collection walks them all again, which made loading
    10,000 Services about 5x slower (building and rendering: 1.5-2x). Nothing in such a
    block leaves cycles worth collecting early. If the collector is already off (another
    thread paused it), it is left as it is.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _parse(text: str, source: str) -> list[_Doc]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        # JSON: parse it as JSON so its errors carry JSON line/column numbers.
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelError(
                f"invalid JSON: {e.msg} (column {e.colno})",
                source=source,
                line=e.lineno,
                hint="Fix the JSON syntax.",
            ) from None
        items = data if isinstance(data, list) else [data]
        return [_Doc(d, 1, None) for d in items]

    if _FAST_LOADER is not None:
        try:
            return _compose(_FAST_LOADER(text))
        except _YAMLErrorAt:
            pass  # re-read below: the pure loader's message and position are the reference
    try:
        return _compose(yaml.SafeLoader(text))
    except _YAMLErrorAt as e:
        err, index = e.args
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        raise ModelError(
            f"invalid YAML: {problem}",
            source=source,
            document=index or 1,
            line=mark.line + 1 if mark is not None else None,
            hint="Fix the YAML syntax (indentation, quoting, '---' between documents).",
        ) from None


#: libyaml's loader (about 10x faster; its nodes carry the same line marks), when PyYAML
#: was built with it. Input it rejects is read again with the pure-Python loader, so error
#: messages do not depend on how PyYAML was built.
_FAST_LOADER: type | None = getattr(yaml, "CSafeLoader", None)


class _YAMLErrorAt(Exception):
    """A yaml.YAMLError in document ``args[1]`` (1-based; 0 before the first)."""


def _compose(loader: Any) -> list[_Doc]:
    """Every non-empty document of ``loader``'s stream, with its node for line numbers."""
    docs: list[_Doc] = []
    index = 0
    try:
        while loader.check_node():
            index += 1
            node = loader.get_node()
            data = loader.construct_document(node)
            if data is not None:
                docs.append(_Doc(data, index, node))
    except yaml.YAMLError as e:
        raise _YAMLErrorAt(e, index) from None
    finally:
        loader.dispose()
    return docs


def _mapping_child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def _sequence_child(node: yaml.Node | None, i: int) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and 0 <= i < len(node.value):
        return node.value[i]
    return None


def _flatten(docs: list[_Doc], source: str) -> list[_Doc]:
    out: list[_Doc] = []
    for doc in docs:
        d = doc.data
        if not isinstance(d, dict):
            raise ModelError(
                f"expected a Kubernetes object (a mapping), got {type(d).__name__}",
                source=source,
                document=doc.document,
                line=_line(doc.node),
                hint="Each YAML document must be one object or a kind: List.",
            )
        kind = d.get("kind")
        if isinstance(kind, str) and kind.endswith("List"):
            items = d.get("items") or []
            if not isinstance(items, list):
                raise ModelError(
                    "items must be a list",
                    source=source,
                    document=doc.document,
                    line=_line(doc.node),
                    obj=kind,
                    field="items",
                    hint="Write items as a YAML sequence.",
                )
            items_node = _mapping_child(doc.node, "items")
            out.extend(
                _flatten(
                    [_Doc(it, doc.document, _sequence_child(items_node, i)) for i, it in enumerate(items)],
                    source,
                )
            )
        else:
            out.append(doc)
    return out


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _describe(d: dict) -> str:
    meta = d.get("metadata") if isinstance(d.get("metadata"), dict) else {}
    name = meta.get("name", "<no name>")
    ns = meta.get("namespace")
    return f"{d.get('kind', '<no kind>')} {ns + '/' if ns else ''}{name}"


_PATH_TOKEN = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]")


def _node_at(node: yaml.Node | None, path: str) -> yaml.Node | None:
    """The YAML node at a msgspec path such as ``$.spec.ports[0].port``."""
    for m in _PATH_TOKEN.finditer(path.removeprefix("$")):
        if node is None:
            return None
        node = _mapping_child(node, m.group(1)) if m.group(1) else _sequence_child(node, int(m.group(2)))
    return node


def _convert(doc: _Doc, source: str, skipped: list[str] | None) -> KubeObject | None:
    d = doc.data
    where = {"source": source, "document": doc.document, "line": _line(doc.node)}
    api, kind = d.get("apiVersion"), d.get("kind")
    if not api or not kind:
        missing = "apiVersion" if not api else "kind"
        raise ModelError(
            f"{missing} is missing",
            **where,
            obj=_describe(d),
            field=missing,
            hint="Every object needs apiVersion and kind, as kubectl prints them.",
        )
    model = PROXY_KINDS.get((api, kind))
    if model is None:
        if skipped is not None:
            skipped.append(f"{_describe(d)} ({api})")
        return None
    meta = d.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise ModelError(
            "metadata.name is missing",
            **where,
            obj=_describe(d),
            field="metadata.name",
            hint="Give the object a name.",
        )
    if kind not in CLUSTER_SCOPED and not meta.get("namespace"):
        # kubectl always prints the namespace; without it the object would be ambiguous.
        raise ModelError(
            "metadata.namespace is missing",
            **where,
            obj=_describe(d),
            field="metadata.namespace",
            hint="Add metadata.namespace (e.g. default).",
        )
    try:
        return from_dict(d)
    except msgspec.ValidationError as e:
        text = str(e)
        path = text.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in text else ""
        problem = text.split(" - at `", 1)[0]
        node = _node_at(doc.node, path) if path else None
        raise ModelError(
            problem,
            source=source,
            document=doc.document,
            line=_line(node) or where["line"],
            obj=_describe(d),
            field=path.removeprefix("$.") or None,
            hint="Fix the value to match the Kubernetes API type.",
        ) from None
    except LoadResourceError as e:
        raise ModelError(str(e), **where, obj=_describe(d)) from None
