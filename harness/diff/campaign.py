"""A differential run: generated cases on two proxiers until the budget is spent.

For each case (``generate.generate_cases``, seeds derived from the run's): run it on A,
then on B (``run.run_case``), compare every flow (``outcome.compare``), set declared
differences aside (``declared.declared_reason``), and shrink the first disagreement of
each kind (class and the flow's key facts) to a scenario file (``shrink``, ``write``).
The result is plain data: the summary (its last line of output) and the records of the
HTML report.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.diff.declared import Declared, declared_reason
from harness.diff.facts import flow_facts
from harness.diff.generate import generate_cases
from harness.diff.outcome import FlowOutcome, compare
from harness.diff.shrink import shrink
from harness.diff.write import check_loads, scenario_text
from harness.options import ClusterOptions

#: facts naming a kind of disagreement (the first of each kind is shrunk): what the flow
#: aims at and the Service properties that decide its fate, not the protocol or the host
KIND_FACTS = ("dest", "type", "etp", "itp", "affinity", "source_ranges", "ipmode")
BATCH = 20
#: runs of both proxiers that must each show a ClientIP-affinity flow's disagreement, the
#: same way round, before it counts (confirming) or a shrinking step is kept. Each proxier
#: sticks to one endpoint drawn at random, so where some endpoints are reached over an
#: asymmetric route the flow is all answered or all silent by the draw: two fair draws
#: give one given disagreement with probability 1/4 per run, (1/4)^4 < 0.4% four times.
STICKY_RUNS = 4


@dataclass
class Side:
    name: str
    options: ClusterOptions
    capabilities: frozenset[str]


@dataclass
class Finding:
    """One flow on which the two proxiers disagree."""

    case: int
    flow: dict[str, Any]
    cls: str
    facts: dict[str, Any]
    a: FlowOutcome
    b: FlowOutcome
    declared: str | None = None
    #: re-run before shrinking (once; ``STICKY_RUNS`` times with ClientIP affinity): False
    #: when a re-run did not show it the same way round (a random draw, e.g. an affinity
    #: choice over an asymmetric route, decided the first outcome); None: not re-run (a
    #: kind already shrunk)
    reproduced: bool | None = None
    scenario: str | None = None  # the shrunk scenario file
    removed: list[str] = field(default_factory=list)
    shrink_runs: int = 0

    @property
    def sticky(self) -> bool:
        return bool(self.facts.get("affinity"))

    def kind(self) -> tuple[Any, ...]:
        return (self.cls, *(self.facts.get(k) for k in KIND_FACTS),
                self.facts.get("serving") == 0, self.facts.get("ready") == 0)

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "flow": self.flow["name"], "class": self.cls,
                "facts": self.facts, "a": self.a.to_dict(), "b": self.b.to_dict(),
                "declared": self.declared, "reproduced": self.reproduced,
                "scenario": self.scenario,
                "removed": self.removed, "shrink_runs": self.shrink_runs}


@dataclass
class Campaign:
    a: Side
    b: Side
    seed: int
    budget_s: float
    out_dir: Path
    declared: list[Declared] = field(default_factory=list)
    shrink_runs: int = 30
    max_cases: int | None = None
    say: Callable[[str], None] = print
    cases: int = 0
    flows: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    deadline: float = float("inf")
    interrupted: bool = False

    # -- comparing one document --------------------------------------------------------
    def disagreements(self, case: int, doc: dict[str, Any], ra: dict[str, FlowOutcome],
                      rb: dict[str, FlowOutcome]) -> list[Finding]:
        out = []
        for flow in doc["flows"]:
            oa, ob = ra.get(flow["name"]), rb.get(flow["name"])
            if oa is None or ob is None:
                continue
            facts = flow_facts(doc, flow)
            for cls in compare(oa, ob, sticky=bool(facts.get("affinity"))):
                why = declared_reason(self.a.name, self.b.name, cls, facts, self.a.capabilities,
                                      self.b.capabilities, self.declared)
                out.append(Finding(case, flow, cls, facts, oa, ob, why))
        return out

    def run_both(self, doc: dict[str, Any]) -> tuple[Any, Any]:
        from harness.diff.run import run_case

        return run_case(doc, self.a.options), run_case(doc, self.b.options)

    # -- shrinking one finding ---------------------------------------------------------
    def still_disagrees(self, f: Finding, last: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
        """The shrinker's test: the two proxiers still disagree on f's flow, in f's class
        and the same way round, on one run of both (``STICKY_RUNS`` runs for a flow with
        ClientIP affinity); the outcomes of the last such run are kept in ``last`` for the
        file's comments."""
        want = direction(f.cls, f.a, f.b)

        def once(doc: dict[str, Any]) -> bool:
            ra, rb = self.run_both(doc)
            if ra.error or rb.error:
                return False
            ok = any(g.flow["name"] == f.flow["name"] and g.cls == f.cls and not g.declared
                     and direction(g.cls, g.a, g.b) == want
                     for g in self.disagreements(f.case, doc, ra.outcomes, rb.outcomes))
            if ok:
                last["outcomes"] = (ra.outcomes, rb.outcomes)
            return ok

        def check(doc: dict[str, Any]) -> bool:
            return all(once(doc) for _ in range(STICKY_RUNS if f.sticky else 1))
        return check

    def shrink_and_write(self, f: Finding, doc: dict[str, Any],
                         outcomes: tuple[dict[str, FlowOutcome], dict[str, FlowOutcome]]) -> None:
        last: dict[str, Any] = {"outcomes": outcomes}
        small, removed, runs = shrink(doc, f.flow["name"], self.still_disagrees(f, last),
                                      self.shrink_runs, stop=self.past_deadline)
        text = scenario_text(small, f.flow["name"], f.cls, (self.a.name, self.b.name),
                             last["outcomes"], removed, self.seed,
                             sticky=bool(f.facts.get("affinity")))
        problem = check_loads(text)
        if problem:
            text = f"# NOTE: this file does not load as written: {problem}\n" + text
        self.out_dir.mkdir(parents=True, exist_ok=True)
        n = sum(1 for g in self.findings if g.scenario) + 1
        path = self.out_dir / f"diff-{self.seed}-{n:03d}-{f.cls}.yaml"
        path.write_text(text)
        f.scenario, f.removed, f.shrink_runs = str(path), removed, runs
        self.say(f"  shrunk in {runs} runs (removed {len(removed)} parts): {path}")

    def past_deadline(self) -> bool:
        """Shrinking goes on at most a minute past the budget (the file is still written)."""
        return time.monotonic() > self.deadline + 60

    # -- the run -----------------------------------------------------------------------
    def run(self) -> None:
        t0 = time.monotonic()
        self.deadline = deadline = t0 + self.budget_s
        kinds: set[tuple[Any, ...]] = set()
        batch = 0
        try:
            while time.monotonic() < deadline:
                for doc in generate_cases(self.seed * 1000 + batch, BATCH):
                    if time.monotonic() >= deadline or self.max_cases is not None \
                            and self.cases >= self.max_cases:
                        break
                    self.one_case(doc, kinds)
                else:
                    batch += 1
                    continue
                break
        except KeyboardInterrupt:
            self.interrupted = True
            self.say("interrupted: the summary covers the cases finished so far")
        self.seconds = time.monotonic() - t0

    def one_case(self, doc: dict[str, Any], kinds: set[tuple[Any, ...]]) -> None:
        case = self.cases
        self.cases += 1
        ra, rb = self.run_both(doc)
        if ra.error or rb.error:
            for side, r in ((self.a, ra), (self.b, rb)):
                if r.error:
                    self.errors[side.name] += 1
                    self.say(f"case {case}: {side.name}: {r.error}")
            return
        self.flows += len(doc["flows"])
        found = self.disagreements(case, doc, ra.outcomes, rb.outcomes)
        self.findings += found
        new = [f for f in found if not f.declared and f.kind() not in kinds]
        self.say(f"case {case}: {len(doc['flows'])} flows, {len(found)} disagreements "
                 f"({sum(1 for f in found if f.declared)} declared, {len(new)} of new kinds)")
        for f in found:
            if not f.declared:
                self.say(f"  {f.cls} on {f.flow['name']!r}: {self.a.name}: {f.a.text()} | "
                         f"{self.b.name}: {f.b.text()}")
        if new:  # one shrink per case (a case's findings often share a cause); others later
            f = new[0]
            last: dict[str, Any] = {}
            f.reproduced = self.still_disagrees(f, last)(doc)
            if not f.reproduced:
                runs = f"{STICKY_RUNS} more runs" if f.sticky else "a second run"
                self.say(f"  not reproduced on {runs} of both: not shrunk ({f.flow['name']!r})")
                return
            kinds.add(f.kind())
            self.shrink_and_write(f, doc, last["outcomes"])

    def summary(self) -> dict[str, Any]:
        found = [f for f in self.findings if not f.declared and f.reproduced is not False]
        confirmed = [f for f in found if f.reproduced]
        declared = [f for f in self.findings if f.declared]
        unstable = [f for f in self.findings if f.reproduced is False]
        return {
            "a": self.a.name, "b": self.b.name, "seed": self.seed, "cases": self.cases,
            "flows": self.flows, "seconds": round(self.seconds, 1),
            "cases_per_minute": round(self.cases / (self.seconds / 60), 2) if self.seconds else 0,
            "disagreements": dict(Counter(f.cls for f in found)),
            "confirmed": dict(Counter(f.cls for f in confirmed)),
            "declared": dict(Counter(f.cls for f in declared)),
            "not_reproduced": dict(Counter(f.cls for f in unstable)),
            "declared_reasons": dict(Counter((f.declared or "").split(" (http")[0]
                                             for f in declared)),
            "kinds": len({f.kind() for f in found}),
            "scenarios": [f.scenario for f in found if f.scenario],
            "errors": dict(self.errors), "interrupted": self.interrupted,
        }


def direction(cls: str, a: FlowOutcome, b: FlowOutcome) -> tuple[Any, ...]:
    """Which way round outcomes ``a`` and ``b`` disagree in class ``cls`` (a repeat of a
    disagreement must be the same way round: A answered and B silent, not the reverse)."""
    if cls == "answered-vs-not":
        return (bool(a.answered),)
    if cls == "endpoints":
        return (len(a.answered) - len(b.answered) > 0, len(a.answered) - len(b.answered) < 0)
    if cls == "partial":
        return (bool(a.refused or a.silent),)
    if cls == "refusal":
        return (tuple(sorted(a.refused)), bool(a.silent), tuple(sorted(b.refused)), bool(b.silent))
    return (tuple(sorted(a.seen)), tuple(sorted(b.seen)))
