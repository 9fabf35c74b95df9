"""A (shrunk) disagreement as a scenario file, both proxiers' outcomes as comments (pure).

The file's flows expect what proxier A did (so it passes on A and fails on B); a person
who decides which side is right edits ``expect`` (and ``masq``) to the right behaviour,
adds a ``known_gaps`` entry for the side that is wrong, and moves it under
``scenarios/``.
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml

from harness.diff.facts import target_service
from harness.diff.generate import NODES, document_text
from harness.diff.outcome import FlowOutcome
from harness.scenario import ScenarioError, parse_scenario


def _endpoint_pods(doc: dict[str, Any]) -> set[str]:
    return {(ep.get("targetRef") or {}).get("name") for o in doc["objects"]
            if o.get("kind") == "EndpointSlice" for ep in o.get("endpoints") or []}


def expectation(o: FlowOutcome, doc: dict[str, Any], protocol: str,
                sticky: bool = False) -> dict[str, Any]:
    """The flow keys (``expect``, ``masq``, ``reach``) that say outcome ``o``."""
    if o.answered:
        pods = sorted({a.rsplit(":", 1)[0] for a in o.answered})
        if not set(pods) <= _endpoint_pods(doc):
            return {"expect": {"untouched": "any"}}
        out: dict[str, Any] = {"expect": pods}
        nodes = {n for n, _, _ in NODES}
        if o.seen == {"the client itself"}:
            out["masq"] = False
        elif o.seen and all(s.split(" ")[0] in nodes for s in o.seen):
            out["masq"] = True
        if len(pods) > 1 and not sticky and not (o.refused or o.silent):
            out["reach"] = "all"
        return out
    if o.refused == {"port unreachable"} and not o.silent:
        return {"expect": "reject"}
    if o.refused == {"reset"} and not o.silent and protocol == "TCP":
        return {"expect": {"untouched": "reset"}}
    return {"expect": "drop"}


def flow_label(doc: dict[str, Any], f: dict[str, Any]) -> str:
    """A flow's name from what it is now (shrinking may have changed its source)."""
    kind = target_service(doc, f)[0]
    return f"{f['from']} to {kind} {f['to']}:{f['port']}/{f.get('protocol', 'TCP')}"


def scenario_text(doc: dict[str, Any], flow_name: str, cls: str, names: tuple[str, str],
                  outcomes: tuple[dict[str, FlowOutcome], dict[str, FlowOutcome]],
                  removed: list[str], seed: int | None = None, sticky: bool = False) -> str:
    """The scenario file: ``doc`` with each flow expecting proxier A's outcome, both
    outcomes as comments above it, a header saying how it was found."""
    a, b = names
    out = {k: v for k, v in doc.items() if k != "flows"}
    label = next((flow_label(doc, f) for f in doc["flows"] if f["name"] == flow_name), flow_name)
    out["description"] = (f"Found by differential testing (harness.diff): {a} and {b} disagree "
                          f"({cls}) on the flow {label!r}. The flows expect what {a} did; "
                          "decide which side is right, edit expect/masq to that and add a "
                          "known_gaps entry for the other side.")
    parts = [document_text(out), "flows:\n"]
    for f in doc["flows"]:
        oa, ob = outcomes[0].get(f["name"]), outcomes[1].get(f["name"])
        g = {k: v for k, v in f.items() if k != "expect"}
        g["name"] = flow_label(doc, f)
        g.update(expectation(oa, doc, f.get("protocol", "TCP"), sticky) if oa
                 else {"expect": "drop"})
        parts.append(f"  # {a}: {oa.text() if oa else 'not run'}\n"
                     f"  # {b}: {ob.text() if ob else 'not run'}\n")
        parts.append(textwrap.indent(yaml.safe_dump([g], sort_keys=False, width=100), "  "))
    text = "".join(parts)
    head = [f"# Differential testing: {a} vs {b}, class {cls}"
            + (f", seed {seed}" if seed is not None else ""),
            "# shrunk by removing: " + (", ".join(removed) or "nothing")]
    return "\n".join(head) + "\n" + text


def check_loads(text: str) -> str | None:
    """None when the file loads as a scenario, else why not."""
    try:
        parse_scenario(text, "<written>")
    except ScenarioError as e:
        return str(e)
    return None
