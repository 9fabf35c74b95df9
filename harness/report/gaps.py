"""Known gaps per proxier: ``known-gaps/<proxier>.yaml``, loaded with ``--known-gaps FILE``.

The file is a YAML list; each entry names a behaviour id the proxier is known not to meet::

    - behavior: service/affinity/clientip-sticks-within-timeout
      reason: affinity is not implemented yet
      link: https://github.com/example/myproxy/issues/12   # optional

Every check with that behaviour id (all its parametrisations) becomes a strict xfail: it
is reported as ``xfail`` with the reason and link, and if it passes the run fails
(XPASS(strict)), so a fixed gap must be removed from the file. Unknown keys, missing or
non-string fields, duplicate ids and ids no check uses are load errors naming the file and
the entry's line. An empty file means no gaps.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_KEYS = {"behavior": True, "reason": True, "link": False}  # key -> required


class KnownGapsError(ValueError):
    """A known-gaps file that cannot be used, located by file and line."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"known gaps {where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


@dataclass(frozen=True)
class KnownGap:
    behavior: str
    reason: str
    link: str | None = None
    line: int | None = None  # 1-based line of the entry in its file

    def to_dict(self) -> dict[str, Any]:
        return {"behavior": self.behavior, "reason": self.reason, "link": self.link}


def load_known_gaps(path: str | Path) -> list[KnownGap]:
    """Parse and validate a known-gaps file (structure only; ids are checked against the
    collected checks by the pytest plugin). Raises ``KnownGapsError``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise KnownGapsError(path, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        # compose (not load) keeps line numbers for the error messages
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise KnownGapsError(path, mark.line + 1 if mark else None,
                             f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if root is None:
        return []
    if not isinstance(root, yaml.SequenceNode):
        raise KnownGapsError(path, root.start_mark.line + 1,
                             "expected a list of {behavior, reason, link} entries")
    gaps: list[KnownGap] = []
    seen: dict[str, int] = {}
    for i, node in enumerate(root.value):
        line = node.start_mark.line + 1
        label = f"entry {i + 1}"
        if not isinstance(node, yaml.MappingNode):
            raise KnownGapsError(path, line, f"{label} is not a mapping with behavior, reason, link")
        fields: dict[str, str] = {}
        for knode, vnode in node.value:
            key = knode.value
            if key not in _KEYS:
                raise KnownGapsError(path, knode.start_mark.line + 1,
                                     f"{label}: unknown key {key!r} (allowed: {', '.join(_KEYS)})")
            if key in fields:
                raise KnownGapsError(path, knode.start_mark.line + 1, f"{label}: duplicate key {key!r}")
            if not isinstance(vnode, yaml.ScalarNode) or not str(vnode.value).strip():
                raise KnownGapsError(path, vnode.start_mark.line + 1,
                                     f"{label}: {key!r} must be a non-empty string")
            fields[key] = str(vnode.value).strip()
        missing = [k for k, required in _KEYS.items() if required and k not in fields]
        if missing:
            raise KnownGapsError(path, line, f"{label} ({fields.get('behavior', '?')}): "
                                             f"missing {', '.join(missing)}")
        bid = fields["behavior"]
        if bid in seen:
            raise KnownGapsError(path, line, f"{label}: behavior {bid!r} is already listed "
                                             f"at line {seen[bid]}")
        seen[bid] = line
        gaps.append(KnownGap(bid, fields["reason"], fields.get("link"), line))
    return gaps


def scan_behavior_ids(directories: set[Path] | list[Path]) -> set[str]:
    """Behaviour ids declared in the ``test_*.py`` files of these directories, read from
    the source (``pytest.mark.behavior("id", ...)`` with a literal id). Lets a run of a
    few files validate a known-gaps file that names checks in sibling modules."""
    ids: set[str] = set()
    for d in directories:
        for f in sorted(Path(d).glob("test_*.py")):
            try:
                tree = ast.parse(f.read_text(), str(f))
            except (OSError, SyntaxError):
                continue  # pytest reports broken test modules itself
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "behavior" and node.args
                        and isinstance(node.args[0], ast.Constant)
                        and isinstance(node.args[0].value, str)):
                    ids.add(node.args[0].value)
    return ids
