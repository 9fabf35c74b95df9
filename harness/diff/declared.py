"""Differences two proxiers declare, so a run reports them apart from its findings (pure).

Two sources:

* capabilities (``harness.proxiers.CAPABILITIES``): a proxier that does not declare
  ``reject-no-endpoints`` may be silent where the other refuses a Service without serving
  endpoints; one that does not declare ``affinity`` may spread a ClientIP Service's
  clients;
* the declared differences file (``known-gaps/diff/declared.yaml``), a YAML list::

      - between: [[reference, kube-proxy], [reference-nft, kube-proxy-nft]]
        class: refusal                  # optional: one of harness.diff.outcome.CLASSES
        when: {dest: unexposed}         # flow facts (harness.diff.facts); a list = any of
        reason: nftables mode rejects unexposed ClusterIP ports; iptables mode lets them pass
        link: https://...

  An entry applies when one proxier is in one ``between`` group and the other in the
  other (either order), the class matches and every ``when`` fact matches.

Declared disagreements are counted and listed in the summary, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.diff.outcome import CLASSES


def default_file() -> Path:
    """The shipped declared differences (a checkout's ``known-gaps/diff/declared.yaml``, or
    the installed suite's copy)."""
    from harness.suite import locate

    return locate().known_gaps / "diff" / "declared.yaml"


_KEYS = {"between", "class", "when", "reason", "link"}


class DeclaredError(ValueError):
    """A declared differences file that cannot be used (the message names file and entry)."""


@dataclass(frozen=True)
class Declared:
    between: tuple[frozenset[str], frozenset[str]]
    reason: str
    cls: str | None = None
    when: dict[str, Any] = field(default_factory=dict)
    link: str | None = None

    def pair_matches(self, a: str, b: str) -> bool:
        x, y = self.between
        return (a in x and b in y) or (a in y and b in x)

    def matches(self, a: str, b: str, cls: str, facts: dict[str, Any]) -> bool:
        if not self.pair_matches(a, b) or (self.cls and self.cls != cls):
            return False
        for k, want in self.when.items():
            have = facts.get(k)
            if not (have in want if isinstance(want, list) else have == want):
                return False
        return True


def load_declared(path: str | Path | None = None) -> list[Declared]:
    """The entries of a declared differences file (default: the shipped one; none when it
    does not exist)."""
    path = Path(path) if path is not None else default_file()
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as e:
        raise DeclaredError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, list):
        raise DeclaredError(f"{path}: must be a list of entries")
    out = []
    for i, d in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(d, dict) or not {"between", "reason"} <= set(d) or set(d) - _KEYS:
            raise DeclaredError(f"{where}: needs 'between' and 'reason', may have 'class', "
                                f"'when', 'link'; has {sorted(d) if isinstance(d, dict) else d!r}")
        groups = d["between"]
        if not (isinstance(groups, list) and len(groups) == 2
                and all(isinstance(g, list) and g for g in groups)):
            raise DeclaredError(f"{where}: between must be two lists of proxier names")
        if d.get("class") is not None and d["class"] not in CLASSES:
            raise DeclaredError(f"{where}: class {d['class']!r} unknown; one of {', '.join(CLASSES)}")
        out.append(Declared((frozenset(groups[0]), frozenset(groups[1])), str(d["reason"]),
                            d.get("class"), dict(d.get("when") or {}), d.get("link")))
    return out


def by_capability(cls: str, facts: dict[str, Any], caps_a: frozenset[str],
                  caps_b: frozenset[str]) -> str | None:
    """Why a disagreement follows from a capability only one proxier declares, or None."""
    differ = caps_a ^ caps_b
    if ("reject-no-endpoints" in differ and cls in ("refusal", "partial")
            and facts.get("serving") == 0):
        return "only one proxier declares reject-no-endpoints"
    if "affinity" in differ and facts.get("affinity") and cls == "endpoints":
        return "only one proxier declares affinity"
    return None


def declared_reason(a: str, b: str, cls: str, facts: dict[str, Any], caps_a: frozenset[str],
                    caps_b: frozenset[str], entries: list[Declared]) -> str | None:
    """Why proxiers ``a`` and ``b`` may disagree in ``cls`` on a flow with ``facts``: a
    capability only one declares, or a declared differences entry; None: a finding."""
    why = by_capability(cls, facts, caps_a, caps_b)
    if why:
        return why
    for e in entries:
        if e.matches(a, b, cls, facts):
            return e.reason + (f" ({e.link})" if e.link else "")
    return None
