"""Expectations: a check states what must hold; a miss fails the test by itself.

As ptf's ``verify_packet``: the helper decides, and its failure says what went wrong in
words on the first line, then the verdict's explanation (expected, observed, the failures,
the probes). The verdict travels with the failure (``VerdictFailure.verdict``), so the
report keeps its numbers; the cluster's evidence (proxier logs, rules) is added by
``harness.evidence``. Example::

    obs = probe(cluster.client, node.ip, svc.node_port(), "tcp", count=6)
    expect_reached(obs, pods, f"via {node.name} ({node.ip})")

fails with ``via node2 (192.0.2.12): expected a reply from one of ['pod1', 'pod2'];
observed 6x TIMEOUT`` and the probe table. Each helper returns the verdict when it holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from harness import verdicts
from harness.verdicts import ObservationLike, Verdict

__all__ = [
    "VerdictFailure", "expect", "expect_affinity", "expect_dropped", "expect_reached",
    "expect_refused", "expect_source", "expect_true", "expect_uniform", "names",
]

# The first line stays readable in a terminal summary and in report.json's "summary".
_HEADLINE_LIMIT = 400


class VerdictFailure(AssertionError):
    """An expectation that did not hold. ``verdict`` is the verdict that decided (None for
    ``expect_true``)."""

    def __init__(self, message: str, verdict: Verdict | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict


def names(pods: Iterable[Any]) -> list[str]:
    """Pod names from pod handles or names."""
    return [p if isinstance(p, str) else p.name for p in pods]


def headline(verdict: Verdict, context: str = "") -> str:
    """One line, in words: where (``context``), what was expected, what was seen."""
    line = f"expected {verdict.expected}; observed {verdict.observed}"
    if len(line) > _HEADLINE_LIMIT:
        line = line[:_HEADLINE_LIMIT - 3] + "..."
    return f"{context}: {line}" if context else f"{verdict.check}: {line}"


def expect(verdict: Verdict, context: str = "", *, details: str = "") -> Verdict:
    """Fail the test unless ``verdict`` passed: first line ``context: expected ...;
    observed ...``, then ``verdict.explain()`` and ``details`` (more evidence, e.g. the
    conntrack entries left)."""
    __tracebackhide__ = True
    if not verdict.passed:
        text = headline(verdict, context) + "\n" + verdict.explain()
        if details:
            text += "\n" + details.rstrip()
        raise VerdictFailure(text, verdict)
    return verdict


def expect_true(condition: object, what: str, details: str = "") -> None:
    """Fail the test with ``what`` (one line, in words) and ``details`` unless
    ``condition``: for exact facts that are not a probe verdict (a rule count, a
    conntrack table, a timeline)."""
    __tracebackhide__ = True
    if not condition:
        raise VerdictFailure(what + (f"\n{details.rstrip()}" if details else ""))


def expect_reached(observations: Sequence[ObservationLike], pods: Iterable[Any],
                   context: str = "", *, details: str = "") -> Verdict:
    """Every probe got a reply, from one of ``pods`` (handles or names)."""
    __tracebackhide__ = True
    return expect(verdicts.reached_only(observations, names(pods)), context, details=details)


def expect_refused(observations: Sequence[ObservationLike], context: str = "", *,
                   icmp: tuple[int, int] | None = (3, 3), or_reset: bool = False,
                   details: str = "") -> Verdict:
    """Every probe was actively refused (ICMP port unreachable by default; see
    ``harness.verdicts.refused``)."""
    __tracebackhide__ = True
    return expect(verdicts.refused(observations, icmp, or_reset=or_reset), context,
                  details=details)


def expect_dropped(observations: Sequence[ObservationLike], context: str = "", *,
                   details: str = "") -> Verdict:
    """Every probe met silence: no reply, reset or ICMP error."""
    __tracebackhide__ = True
    return expect(verdicts.dropped(observations), context, details=details)


def expect_source(observations: Sequence[ObservationLike],
                  expected: str | Callable[[str | None], bool], context: str = "", *,
                  description: str | None = None, details: str = "") -> Verdict:
    """Every probe got a reply and the pod saw the source ``expected`` (an address, or a
    predicate named by ``description``)."""
    __tracebackhide__ = True
    return expect(verdicts.source_seen(observations, expected, description=description),
                  context, details=details)


def expect_uniform(observations: Sequence[ObservationLike], pods: Iterable[Any],
                   context: str = "", *, alpha: float = verdicts.DEFAULT_ALPHA) -> Verdict:
    """New connections spread uniformly over ``pods`` (chi-square at ``alpha``, with every
    probe answered; see ``harness.verdicts.uniformity_verdict``)."""
    __tracebackhide__ = True
    counts = Counter(o.pod for o in observations if o.pod is not None)
    return expect(verdicts.uniformity_verdict(counts, names(pods), alpha,
                                              observations=observations), context)


def expect_affinity(observations: Sequence[ObservationLike], pods: Iterable[Any],
                    context: str = "") -> Verdict:
    """ClientIP affinity: each client address sticks to one of ``pods``; clients are
    not all on one (see ``harness.verdicts.affinity_verdict``)."""
    __tracebackhide__ = True
    return expect(verdicts.affinity_verdict(observations, names(pods)), context)
