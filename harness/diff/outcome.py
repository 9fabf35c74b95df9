"""A flow's observable outcome, and how two outcomes disagree (pure: no root, no sockets).

An outcome is what a person would write down after probing without knowing what is right:
the endpoints that answered (``pod:port``, as a set), whether probes were refused (ICMP,
which kind) or reset, whether some met silence, and which hosts the endpoints saw as the
source (host names, ``harness.diff.run`` maps addresses). Enough probes are sent that a
set of n endpoints is seen whole with probability >= 1 - 1e-6 when the proxier spreads
uniformly (``probe_count``, ``harness.verdicts.reach_samples``).

Disagreement classes (``compare``):

* ``answered-vs-not``: one proxier's probes were answered, the other's never;
* ``endpoints``: both answered, by different sets of endpoints (with ClientIP affinity,
  where each client sticks to one endpoint drawn at random: by a different number);
* ``refusal``: neither answered, and they refused differently (ICMP port unreachable,
  another ICMP, TCP reset, silence);
* ``partial``: both answered, but only one also met refusals or silence;
* ``source``: the endpoints saw different source hosts (masquerading differs; with
  affinity only when the same endpoint answered).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness import verdicts

CLASSES = ("answered-vs-not", "endpoints", "refusal", "partial", "source")
#: the fewest probes per flow: a flow answered a third of the time (an asymmetric route
#: for two endpoints of three) passes for silent with probability (2/3)^21 < 2e-4
MIN_PROBES = 21


def probe_count(candidates: int) -> int:
    """Probes for a flow whose Service lists ``candidates`` endpoint addresses: enough to
    see all of them (``verdicts.reach_samples``, <= 1e-6 to miss one of a uniform spread)."""
    return max(MIN_PROBES, verdicts.reach_samples(max(candidates, 1)))


@dataclass(frozen=True)
class FlowOutcome:
    answered: frozenset[str] = frozenset()  # "pod:port"
    refused: frozenset[str] = frozenset()  # "icmp 3/3", "reset", "error ..."
    silent: int = 0  # probes that met silence
    seen: frozenset[str] = frozenset()  # source hosts the endpoints saw
    probes: int = 0

    def text(self) -> str:
        """One line for reports and scenario comments."""
        parts = []
        if self.answered:
            parts.append("answered by {" + ", ".join(sorted(self.answered)) + "}")
            parts.append("saw " + ", ".join(sorted(self.seen)))
        if self.refused:
            parts.append("refused (" + ", ".join(sorted(self.refused)) + ")")
        if self.silent:
            parts.append(f"silence ({self.silent}/{self.probes} probes)")
        return "; ".join(parts) or "no probes"

    def to_dict(self) -> dict[str, Any]:
        return {"answered": sorted(self.answered), "refused": sorted(self.refused),
                "silent": self.silent, "seen": sorted(self.seen), "probes": self.probes,
                "text": self.text()}


def refusal_kind(o: Any) -> str | None:
    """How a probe was refused, or None if it was answered or met silence."""
    name = verdicts.outcome_name(o)
    if name == "ICMP":
        return "port unreachable" if (o.icmp_type, o.icmp_code) in ((3, 3), (1, 4)) \
            else f"icmp {o.icmp_type}/{o.icmp_code}"
    if name == "RESET":
        return "reset"
    if name == "ERROR":
        return f"error {o.error}"
    return None


def outcome_of(obs: Sequence[Any], host_of: Callable[[str], str]) -> FlowOutcome:
    """The outcome of a flow's probes; ``host_of`` names the host owning an address."""
    answered, refused, seen, silent = set(), set(), set(), 0
    for o in obs:
        name = verdicts.outcome_name(o)
        if name == "REPLY":
            answered.add(f"{o.pod}:{o.pod_port}" if o.pod_port is not None else str(o.pod))
            if o.seen_src:
                seen.add("the client itself" if o.seen_src == o.src else host_of(o.seen_src))
        elif name == "TIMEOUT":
            silent += 1
        else:
            refused.add(refusal_kind(o) or name.lower())
    return FlowOutcome(frozenset(answered), frozenset(refused), silent, frozenset(seen), len(obs))


def compare(a: FlowOutcome, b: FlowOutcome, *, sticky: bool = False) -> list[str]:
    """The classes in which outcome ``a`` and ``b`` disagree (empty: they agree).
    ``sticky``: the flow's Service has ClientIP affinity, so each proxier picks one
    endpoint at random and only the number of endpoints reached is compared."""
    if bool(a.answered) != bool(b.answered):
        return ["answered-vs-not"]
    out = []
    if a.answered:
        same = (len(a.answered) == len(b.answered)) if sticky else a.answered == b.answered
        if not same:
            out.append("endpoints")
        if bool(a.refused or a.silent) != bool(b.refused or b.silent):
            out.append("partial")
        # with affinity the source seen depends on the endpoint drawn (a pod reaching
        # itself is masqueraded to its gateway, another endpoint sees the node)
        if a.seen != b.seen and (not sticky or a.answered == b.answered):
            out.append("source")
    elif a.refused != b.refused or bool(a.silent) != bool(b.silent):
        out.append("refusal")
    return out
