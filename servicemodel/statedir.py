"""The state directory: how Kubernetes objects reach a proxier without an API server.

Layout of ``{state_dir}``:

``state.yaml``
    One ``kind: List`` document, as ``kubectl get svc,endpointslices,nodes -o yaml`` prints
    it, whose ``metadata.resourceVersion`` is the generation (a decimal integer that only
    grows). Replaced atomically (write to a temporary file, then rename), so a reader never
    sees half a state.
``applied/<node>``
    Written by a proxier that reports progress: the generation it has applied, as text.
    Also replaced atomically. Optional: a proxier that never writes it is waited for by
    probing instead. A process proxying several IP families (dual-stack, e.g. ``refproxier
    run --ip-family 4,6``) writes a generation only once every family has applied it.
    With the harness's API control plane (``--control-plane api``) no ``state.yaml`` is
    written and the generation is the API's resourceVersion the proxier has applied
    (``harness/controlplane/apiserver.py``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

STATE_FILE = "state.yaml"
APPLIED_DIR = "applied"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_state(state_dir: str | os.PathLike, objects: list[dict[str, Any]], generation: int) -> Path:
    """Publish ``objects`` (plain dicts, Kubernetes-shaped) as generation ``generation``."""
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": str(generation)},
        "items": objects,
    }
    path = Path(state_dir) / STATE_FILE
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    _atomic_write(path, yaml.dump(doc, Dumper=dumper, sort_keys=False))
    return path


def state_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / STATE_FILE


def read_generation(text_or_doc: str | dict) -> int | None:
    """The generation of a state document, or None when it carries none."""
    if isinstance(text_or_doc, str):
        # write_state puts metadata before items: parse only that head, not 10,000 objects.
        head, sep, _ = text_or_doc.partition("\nitems:")
        doc = _load(head if sep else text_or_doc)
        if sep and not (isinstance(doc, dict) and "metadata" in doc):
            doc = _load(text_or_doc)
    else:
        doc = text_or_doc
    if not isinstance(doc, dict):
        return None
    rv = (doc.get("metadata") or {}).get("resourceVersion")
    try:
        return int(rv)
    except (TypeError, ValueError):
        return None


def _load(text: str) -> object:
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return None


def write_applied(state_dir: str | os.PathLike, node: str, generation: int) -> None:
    """Called by a proxier after it has applied ``generation`` on ``node``."""
    _atomic_write(Path(state_dir) / APPLIED_DIR / node, f"{generation}\n")


def read_applied(state_dir: str | os.PathLike, node: str) -> int | None:
    """The generation ``node``'s proxier last reported, or None if it never did."""
    try:
        return int((Path(state_dir) / APPLIED_DIR / node).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
