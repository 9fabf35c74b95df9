"""Observations -> pass/fail verdicts, exact and statistical, each with a stated error rate.

Pure functions: no root, no sockets. The probe module (``harness.traffic.probe``) produces
``Observation`` records; this module only reads their attributes (see ``ObservationLike``),
so it does not import the probe module and works with anything shaped like it.

Exact verdicts (false-failure probability 0 on a correct proxier in a loss-free netns lab):
``reached_only``, ``refused``, ``dropped``, ``source_seen``, and the per-client part of
``affinity_verdict``. Statistical verdicts: ``uniformity_verdict`` (chi-square against
uniform, at ``alpha`` = 1e-6 by default) and ``affinity_verdict`` (stickiness per client,
spread across clients). Their sample sizes come from a power analysis against the classic
load-balancing faults (``FAULTS``); the derivation, the tables (regenerate them with
``python -m harness.verdicts``) and how exact alpha is are in docs/verdicts.md.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import stats

DEFAULT_ALPHA = 1e-6
DEFAULT_POWER = 0.999
# The largest distribution sample a test may reasonably send (a few seconds of probes).
DEFAULT_MAX_SAMPLES = 20000
# How many probes the failure table lists before summarising the rest.
PROBE_TABLE_ROWS = 10


# --------------------------------------------------------------------------- observations


@runtime_checkable
class ObservationLike(Protocol):
    """The attributes of ``harness.traffic.probe.Observation`` that verdicts read.

    Typed structurally so this module does not depend on the probe module being importable.
    ``outcome`` is an enum whose member *names* are REPLY, RESET, ICMP, TIMEOUT, ERROR.
    """

    @property
    def outcome(self) -> Any: ...
    @property
    def pod(self) -> str | None: ...
    @property
    def seen_src(self) -> str | None: ...
    @property
    def seen_sport(self) -> int | None: ...
    @property
    def icmp_type(self) -> int | None: ...
    @property
    def icmp_code(self) -> int | None: ...
    @property
    def rtt(self) -> float | None: ...
    @property
    def src(self) -> str | None: ...
    @property
    def sport(self) -> int | None: ...
    @property
    def dst(self) -> str | None: ...
    @property
    def dport(self) -> int | None: ...
    @property
    def proto(self) -> str | None: ...


def outcome_name(obs: ObservationLike) -> str:
    """The outcome as an upper-case name ("REPLY", ...), whatever the enum's values are."""
    o = obs.outcome
    name = getattr(o, "name", None)
    return str(name if name is not None else o).upper()


def count_endpoints(observations: Iterable[ObservationLike]) -> Counter[str]:
    """Replies per answering pod (non-replies are not counted)."""
    return Counter(o.pod for o in observations if outcome_name(o) == "REPLY" and o.pod is not None)


def _fmt_addr(host: Any, port: Any) -> str:
    if host is None:
        return "?"
    host = str(host)
    if ":" in host:  # IPv6 literal: bracket it so the port stays readable
        host = f"[{host}]"
    return f"{host}:{port}" if port is not None else host


def _probe_row(i: int, o: ObservationLike) -> str:
    out = outcome_name(o)
    detail = ""
    if out == "REPLY":
        detail = f"pod={o.pod} saw={_fmt_addr(o.seen_src, o.seen_sport)}"
    elif out == "ICMP":
        detail = f"icmp type={o.icmp_type} code={o.icmp_code}"
    rtt = f"{o.rtt * 1000:.1f}ms" if isinstance(o.rtt, int | float) else "-"
    flow = f"{o.proto or '?'} {_fmt_addr(o.src, o.sport)} -> {_fmt_addr(o.dst, o.dport)}"
    return f"  #{i:<4} {flow:<48} {out:<8} {detail:<40} {rtt}".rstrip()


def _probe_key(o: ObservationLike) -> str:
    out = outcome_name(o)
    if out == "REPLY":
        return f"REPLY pod={o.pod} saw={o.seen_src}"
    if out == "ICMP":
        return f"ICMP type={o.icmp_type} code={o.icmp_code}"
    return out


def probe_table(observations: Sequence[ObservationLike], limit: int = PROBE_TABLE_ROWS) -> str:
    """The first ``limit`` probes, one per line, then counts of every kind of result."""
    if not observations:
        return "  (no probes)"
    lines = [_probe_row(i, o) for i, o in enumerate(observations[:limit])]
    if len(observations) > limit:
        lines.append(f"  ... {len(observations) - limit} more")
    summary = Counter(_probe_key(o) for o in observations)
    lines.append(f"  summary of {len(observations)} probes:")
    lines += [f"    {c:>6} x {k}" for k, c in summary.most_common()]
    return "\n".join(lines)


def _obs_to_dict(o: ObservationLike) -> dict[str, Any]:
    d: dict[str, Any] = {"outcome": outcome_name(o)}
    for attr in ("pod", "seen_src", "seen_sport", "icmp_type", "icmp_code", "rtt",
                 "src", "sport", "dst", "dport", "proto"):
        d[attr] = getattr(o, attr, None)
    return d


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class EndpointCount:
    """One row of a distribution table: how often an endpoint answered vs expected."""

    endpoint: str
    observed: int
    expected: float  # expected count; 0 for an endpoint that must never answer


@dataclass
class Verdict:
    """The result of one check: what was expected, what was seen, and how sure we are.

    ``alpha`` is the probability that a correct proxier fails this check (0.0 for exact
    checks); ``power`` maps fault names to the probability this check catches them at the
    sample size it had (for distributions: the ncx2 approximation, slightly optimistic for
    large effects at small N -- see docs/verdicts.md).
    """

    check: str
    passed: bool
    expected: str
    observed: str
    failures: list[str] = field(default_factory=list)
    alpha: float = 0.0
    power: dict[str, float] = field(default_factory=dict)
    statistic: float | None = None
    p_value: float | None = None
    sample_size: int = 0
    per_endpoint: list[EndpointCount] = field(default_factory=list)
    probes: Sequence[ObservationLike] = ()
    notes: list[str] = field(default_factory=list)

    def explain(self) -> str:
        """A failure message: expected vs observed, why it failed, a table of the probes."""
        head = "PASS" if self.passed else "FAIL"
        lines = [f"{head} {self.check}", f"  expected: {self.expected}",
                 f"  observed: {self.observed}"]
        lines += [f"  - {f}" for f in self.failures]
        if self.statistic is not None:
            lines.append(f"  statistic={self.statistic:.4g} p-value={self.p_value:.3g} "
                         f"alpha={self.alpha:.3g} N={self.sample_size}")
        elif self.sample_size:
            lines.append(f"  N={self.sample_size} false-failure probability={self.alpha:.3g}")
        if self.power:
            lines.append("  power: " + ", ".join(f"{k}={v:.6f}" for k, v in self.power.items()))
        if self.per_endpoint:
            lines.append(f"  {'endpoint':<32} {'observed':>9} {'expected':>10}")
            for row in self.per_endpoint:
                mark = "" if row.expected or not row.observed else "  <- unexpected"
                if row.expected and not row.observed:
                    mark = "  <- never seen"
                lines.append(f"  {row.endpoint:<32} {row.observed:>9} {row.expected:>10.1f}{mark}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.probes:
            lines.append("  probes:")
            lines.append(probe_table(self.probes))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record for the run report (all probes included)."""
        return {
            "check": self.check,
            "passed": self.passed,
            "expected": self.expected,
            "observed": self.observed,
            "failures": list(self.failures),
            "alpha": self.alpha,
            "power": dict(self.power),
            "statistic": self.statistic,
            "p_value": self.p_value,
            "sample_size": self.sample_size,
            "per_endpoint": [{"endpoint": r.endpoint, "observed": r.observed,
                              "expected": r.expected} for r in self.per_endpoint],
            "notes": list(self.notes),
            "probes": [_obs_to_dict(o) for o in self.probes],
        }


# --------------------------------------------------------------------------- faults & power


def cascade(rule_probabilities: Sequence[float]) -> np.ndarray:
    """Endpoint probabilities of an iptables statistic cascade.

    Rule i fires with ``rule_probabilities[i]`` if no earlier rule fired; the last endpoint
    gets the unconditional remainder, so the result has ``len(rule_probabilities) + 1`` cells.
    """
    out, remaining = [], 1.0
    for p in rule_probabilities:
        out.append(remaining * p)
        remaining *= 1.0 - p
    out.append(remaining)
    return np.asarray(out)


@dataclass(frozen=True)
class Fault:
    """A classic load-balancing bug, as the endpoint distribution it produces for n endpoints."""

    name: str
    description: str
    probabilities: Callable[[int], np.ndarray]


def _rounded(decimals: int) -> Callable[[int], np.ndarray]:
    # The bug prints 1/(n-i) with too few decimals; Python's % formatting rounds the exact
    # binary value like Go's fmt does (ties to even), which is what a proxier would emit.
    return lambda n: cascade([float(f"%0.{decimals}f" % (1.0 / (n - i))) for i in range(n - 1)])


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("cascade-1/n", "every statistic rule has probability 1/n instead of 1/(n-i)",
              lambda n: cascade([1.0 / n] * (n - 1))),
        Fault("rounded-1dp", "probabilities printed with %0.1f, last rule unconditional",
              _rounded(1)),
        Fault("rounded-2dp", "probabilities printed with %0.2f, last rule unconditional",
              _rounded(2)),
        Fault("missing-endpoint", "one endpoint left out: n-1 get 1/(n-1), one gets 0",
              lambda n: np.asarray([1.0 / (n - 1)] * (n - 1) + [0.0])),
    )
}
DEFAULT_FAULTS: tuple[str, ...] = tuple(FAULTS)


def noncentrality_per_sample(probabilities: Sequence[float]) -> float:
    """Pearson noncentrality per probe against uniform: sum((p - p0)^2 / p0), p0 = 1/n."""
    p = np.asarray(probabilities, dtype=float)
    p0 = 1.0 / len(p)
    return float(np.sum((p - p0) ** 2 / p0))


def chi_square_power(n: int, samples: int, probabilities: Sequence[float],
                     alpha: float = DEFAULT_ALPHA) -> float:
    """Approximate power of the uniform chi-square test at ``samples`` against ``probabilities``."""
    df = n - 1
    critical = stats.chi2.isf(alpha, df)
    lam = samples * noncentrality_per_sample(probabilities)
    if lam <= 0.0:
        return float(alpha)  # indistinguishable from uniform: rejects only by chance
    return float(stats.ncx2.sf(critical, df, lam))


def _min_samples_for_power(n: int, lam_per_sample: float, alpha: float, power: float,
                           limit: int) -> int | None:
    """Smallest N with power >= ``power``, or None if none <= ``limit`` (bisection on N)."""
    df = n - 1
    critical = stats.chi2.isf(alpha, df)

    def ok(N: int) -> bool:
        return stats.ncx2.sf(critical, df, N * lam_per_sample) >= power

    if lam_per_sample <= 0.0:
        return None
    hi = 1
    while not ok(hi):
        hi *= 2
        if hi > limit * 1024:  # far beyond anything useful: report as undetectable
            return None
    lo = max(1, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


# Monte-Carlo check of the ncx2 answer: runs and seed are fixed so plans are reproducible.
POWER_CHECK_RUNS = 100_000
POWER_CHECK_SEED = 20261124
# ... and at most this many multinomial cells per simulation, so that hundreds of endpoints
# stay affordable (n <= 40 keeps all 100,000 runs; n = 320: 12,500 runs, a miss-rate
# resolution of 8e-5 against the 1e-3 it checks; never fewer than MIN runs).
POWER_CHECK_CELLS = 4_000_000
POWER_CHECK_MIN_RUNS = 10_000


def power_check_runs(n: int) -> int:
    """Monte-Carlo runs for ``n`` endpoints (see POWER_CHECK_CELLS)."""
    return max(POWER_CHECK_MIN_RUNS, min(POWER_CHECK_RUNS, POWER_CHECK_CELLS // max(n, 1)))


def zero_check_enabled(n: int, samples: int, alpha: float) -> bool:
    """Whether uniformity_verdict fails on an endpoint that was never seen (see module doc)."""
    return n * (1.0 - 1.0 / n) ** samples <= alpha / 100


def simulated_miss_rate(n: int, samples: int, probabilities: Sequence[float],
                        alpha: float = DEFAULT_ALPHA, runs: int | None = None,
                        seed: int = POWER_CHECK_SEED) -> float:
    """Fraction of simulated faulty runs that ``uniformity_verdict``'s rule lets pass
    (``runs``: ``power_check_runs(n)`` unless given)."""
    runs = power_check_runs(n) if runs is None else runs
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(samples, probabilities, size=runs)
    p_zero = n * (1.0 - 1.0 / n) ** samples
    zero_on = p_zero <= alpha / 100
    chi_alpha = alpha - p_zero if zero_on else alpha
    p_values = stats.chisquare(counts, np.full(n, samples / n), axis=1).pvalue
    passes = p_values >= chi_alpha
    if zero_on:
        passes &= (counts > 0).all(axis=1)
    return float(passes.mean())


@functools.lru_cache(maxsize=256)
def _fault_samples(n: int, fault: Fault, alpha: float, power: float,
                   limit: int) -> tuple[float, int | None, int | None]:
    """(noncentrality per probe, ncx2 sample size, Monte-Carlo-corrected sample size)."""
    probs = fault.probabilities(n)
    lam = noncentrality_per_sample(probs)
    N0 = _min_samples_for_power(n, lam, alpha, power, limit)
    if N0 is None or N0 > limit:
        return lam, N0, N0
    # ncx2 is optimistic for large effects at small N (e.g. n=10, cascade-1/n: 2.4% misses at
    # the ncx2 N=91), so grow N by 2% steps until the simulated verdict rule has the power.
    N = N0
    while simulated_miss_rate(n, N, probs, alpha) > 1.0 - power:
        N = N + max(1, math.ceil(N * 0.02))
    return lam, N0, N


@dataclass(frozen=True)
class FaultPlan:
    """How many probes catch one fault at the stated power, and whether it is covered."""

    fault: str
    noncentrality_per_sample: float
    ncx2_samples: int | None  # the analytic (noncentral chi-square) answer
    samples: int | None  # after the Monte-Carlo check; None: exactly uniform at this n
    detectable: bool  # samples is not None and samples <= max_samples


@dataclass(frozen=True)
class SamplePlan:
    """The sample size for a distribution check and the per-fault reasoning behind it."""

    n: int
    alpha: float
    power: float
    max_samples: int
    samples: int
    faults: tuple[FaultPlan, ...]

    @property
    def covered(self) -> list[str]:
        return [f.fault for f in self.faults if f.detectable]

    @property
    def not_covered(self) -> list[str]:
        """Faults that change the distribution but need more than max_samples probes."""
        return [f.fault for f in self.faults if f.samples is not None and not f.detectable]

    @property
    def not_a_fault(self) -> list[str]:
        """Faults that leave the distribution exactly uniform at this n."""
        return [f.fault for f in self.faults if f.samples is None]


def sample_plan(n: int, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
                faults: Iterable[str | Fault] = DEFAULT_FAULTS,
                max_samples: int = DEFAULT_MAX_SAMPLES) -> SamplePlan:
    """Per-fault sample sizes for n endpoints; the plan's ``samples`` is the max over the
    detectable ones (at least 5 expected per endpoint, and enough that the exact
    "never seen" check is valid at alpha)."""
    if n < 2:
        raise ValueError(f"a distribution needs at least 2 endpoints, got n={n}")
    plans = []
    for f in faults:
        fault = FAULTS[f] if isinstance(f, str) else f
        lam, N0, N = _fault_samples(n, fault, alpha, power, max_samples)
        plans.append(FaultPlan(fault.name, lam, N0, N, N is not None and N <= max_samples))
    # Floors: Pearson's approximation wants >= 5 expected per cell; the zero-count check
    # wants n(1-1/n)^N <= alpha/100 so that it barely eats into alpha.
    floor_cells = 5 * n
    floor_zero = math.ceil(math.log(alpha / 100 / n) / math.log(1.0 - 1.0 / n))
    detectable = [p.samples for p in plans if p.detectable and p.samples is not None]
    samples = max([floor_cells, floor_zero, *detectable])
    return SamplePlan(n, alpha, power, max_samples, samples, tuple(plans))


def required_samples(n: int, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
                     faults: Iterable[str | Fault] = DEFAULT_FAULTS,
                     max_samples: int = DEFAULT_MAX_SAMPLES) -> int:
    """Probes needed so the uniformity test has false-failure probability <= alpha and power
    >= ``power`` against every fault in ``faults`` that is detectable with <= max_samples
    probes (see ``sample_plan(...).not_covered`` for the ones that are not)."""
    return sample_plan(n, alpha, power, faults, max_samples).samples


def sample_size_table(ns: Sequence[int] = (2, 3, 5, 10), alpha: float = DEFAULT_ALPHA,
                      power: float = DEFAULT_POWER,
                      max_samples: int = DEFAULT_MAX_SAMPLES) -> str:
    """The table of docs/verdicts.md, regenerated."""
    names = list(DEFAULT_FAULTS)
    head = f"{'n':<4}" + "".join(f"{name:<{max(16, len(name) + 2)}}" for name in names)
    lines = [head + "required_samples"]
    for n in ns:
        plan = sample_plan(n, alpha, power, names, max_samples)
        row = f"{n:<4}"
        for name, fp in zip(names, plan.faults, strict=True):
            width = max(16, len(name) + 2)
            if fp.samples is None:
                cell = "-"
            elif not fp.detectable:
                cell = f">max({fp.samples})"
            elif fp.ncx2_samples != fp.samples:
                cell = f"{fp.samples} ({fp.ncx2_samples})"
            else:
                cell = str(fp.samples)
            row += f"{cell:<{width}}"
        lines.append(row + str(plan.samples))
    return "\n".join(lines)


# --------------------------------------------------------------------------- distribution


def uniformity_verdict(counts: Mapping[str, int], expected_endpoints: Sequence[str],
                       alpha: float = DEFAULT_ALPHA, *,
                       observations: Sequence[ObservationLike] = (),
                       check: str = "distribution/uniform") -> Verdict:
    """Do new connections spread uniformly over ``expected_endpoints``?

    Fails if any answer came from outside ``expected_endpoints`` (exact), if an expected
    endpoint was never seen while that is (almost) impossible by chance, or if Pearson's
    chi-square rejects uniformity at the remaining alpha. ``observations`` (optional) are
    only used for the probe table, and any non-reply among them is a failure.
    """
    endpoints = list(dict.fromkeys(expected_endpoints))
    n = len(endpoints)
    if n == 0:
        raise ValueError("expected_endpoints is empty")
    N_in = sum(int(counts.get(e, 0)) for e in endpoints)
    stray = {k: int(v) for k, v in counts.items() if k not in endpoints and v}
    N = N_in + sum(stray.values())
    failures: list[str] = []
    notes: list[str] = []
    exp_each = N_in / n if n else 0.0
    rows = [EndpointCount(e, int(counts.get(e, 0)), exp_each) for e in endpoints]
    rows += [EndpointCount(k, v, 0.0) for k, v in sorted(stray.items())]
    if stray:
        failures.append(f"answers from endpoints outside the expected set: {stray}")
    non_replies = Counter(outcome_name(o) for o in observations if outcome_name(o) != "REPLY")
    if non_replies:
        failures.append(f"probes without a reply: {dict(non_replies)}")

    expected = f"every new connection reaches one of {n} endpoints with probability 1/{n} each"
    observed = ", ".join(f"{r.endpoint}={r.observed}" for r in rows) or "no answers"
    if N_in == 0:
        failures.append("no answers from any expected endpoint")
        return Verdict(check, False, expected, observed, failures, alpha=alpha,
                       sample_size=N, per_endpoint=rows, probes=observations, notes=notes)

    statistic: float | None = None
    p_value: float | None = None
    power: dict[str, float] = {}
    if n == 1:
        notes.append("one endpoint: nothing to spread, only the exact checks apply")
    else:
        # Split alpha between the exact "never seen" check and the chi-square (union bound).
        p_zero = n * (1.0 - 1.0 / n) ** N_in
        chi_alpha = alpha
        if p_zero <= alpha / 100:
            chi_alpha = alpha - p_zero
            unseen = [r.endpoint for r in rows if r.expected and not r.observed]
            if unseen:
                failures.append(f"expected endpoints never seen in {N_in} answers: {unseen} "
                                f"(probability under uniform <= {p_zero:.3g})")
        else:
            notes.append(f"sample too small for the exact never-seen check "
                         f"(P(some endpoint unseen | uniform) <= {p_zero:.3g} > alpha/100)")
        res = stats.chisquare([r.observed for r in rows[:n]], [exp_each] * n)
        statistic, p_value = float(res.statistic), float(res.pvalue)
        if p_value < chi_alpha:
            failures.append(f"chi-square rejects uniformity: p={p_value:.3g} < alpha={chi_alpha:.3g}")
        for name, fault in FAULTS.items():
            probs = fault.probabilities(n)
            if noncentrality_per_sample(probs) > 0:
                power[name] = chi_square_power(n, N_in, probs, chi_alpha)
        needed = required_samples(n, alpha)
        if N_in < needed:
            notes.append(f"{N_in} answers < {needed} required for power {DEFAULT_POWER} "
                         "against the classic faults")
    return Verdict(check, not failures, expected, observed, failures, alpha=alpha, power=power,
                   statistic=statistic, p_value=p_value, sample_size=N, per_endpoint=rows,
                   probes=observations, notes=notes)


# --------------------------------------------------------------------------- affinity


def affinity_clients_needed(n: int, alpha: float = DEFAULT_ALPHA) -> int:
    """Client addresses k so that a correct proxier sends all k to one endpoint with
    probability n^(1-k) <= alpha (the "spread" check's false-failure probability)."""
    if n < 2:
        raise ValueError("spread needs at least 2 endpoints")
    k = 1 + math.ceil(math.log(1.0 / alpha) / math.log(n) - 1e-12)
    return max(2, k)


def affinity_connections_needed(n: int, power: float = DEFAULT_POWER, clients: int = 1) -> int:
    """Connections m per client so that a proxier without affinity (uniform per connection)
    looks sticky for all ``clients`` with probability n^(clients*(1-m)) <= 1 - power."""
    if n < 2:
        raise ValueError("stickiness is only observable with at least 2 endpoints")
    per_client = math.log(1.0 / (1.0 - power)) / (clients * math.log(n))
    return 1 + max(1, math.ceil(per_client - 1e-12))


def affinity_power(n: int, connections_per_client: Iterable[int]) -> float:
    """Probability that the stickiness check catches a proxier without affinity."""
    looks_sticky = 1.0
    for m in connections_per_client:
        looks_sticky *= float(n) ** (1 - m) if m >= 1 else 1.0
    return 1.0 - looks_sticky


def affinity_verdict(observations: Sequence[ObservationLike], expected_endpoints: Sequence[str],
                     alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER, *,
                     client_of: Callable[[ObservationLike], str | None] = lambda o: o.src,
                     check: str = "affinity/client-ip") -> Verdict:
    """ClientIP affinity: each client address sticks to one endpoint (exact); different
    client addresses are not all sent to the same endpoint (false failure n^(1-k) <= alpha,
    only checked when there are k >= affinity_clients_needed(n, alpha) clients).

    All observations are assumed to be new connections made within the affinity timeout.
    """
    endpoints = list(dict.fromkeys(expected_endpoints))
    n = len(endpoints)
    failures: list[str] = []
    notes: list[str] = []
    by_client: dict[str, list[ObservationLike]] = {}
    for o in observations:
        by_client.setdefault(str(client_of(o)), []).append(o)
    non_replies = Counter(outcome_name(o) for o in observations if outcome_name(o) != "REPLY")
    if non_replies:
        failures.append(f"probes without a reply: {dict(non_replies)}")
    stray = Counter(o.pod for o in observations
                    if outcome_name(o) == "REPLY" and o.pod not in endpoints)
    if stray:
        failures.append(f"answers from endpoints outside the expected set: {dict(stray)}")
    chosen: dict[str, set[str]] = {
        c: {str(o.pod) for o in obs if outcome_name(o) == "REPLY"} for c, obs in by_client.items()}
    for c, pods in chosen.items():
        if len(pods) > 1:
            per = Counter(str(o.pod) for o in by_client[c] if outcome_name(o) == "REPLY")
            failures.append(f"client {c} reached {len(pods)} endpoints: {dict(per)}")
    k = len(by_client)
    used = {next(iter(p)) for p in chosen.values() if len(p) == 1}
    k_needed = affinity_clients_needed(n, alpha) if n >= 2 else 0
    spread_alpha = 0.0
    if n >= 2 and k >= k_needed:
        spread_alpha = float(n) ** (1 - k)
        if len(used) == 1 and all(len(p) == 1 for p in chosen.values()):
            failures.append(f"all {k} clients went to {next(iter(used))} "
                            f"(chance under correct affinity {spread_alpha:.3g})")
    elif n >= 2:
        notes.append(f"spread across clients not checked: {k} clients < {k_needed} needed "
                     f"for false-failure probability <= {alpha:g}")
    pw = affinity_power(n, [len(v) for v in by_client.values()]) if n >= 2 else 0.0
    if n >= 2 and pw < power:
        notes.append(f"power against 'no affinity' is only {pw:.6f} < {power} "
                     f"(use >= {affinity_connections_needed(n, power, max(k, 1))} "
                     f"connections per client)")
    expected = (f"each client address reaches exactly one of {n} endpoints; "
                f"{k} clients not all on one endpoint")
    observed = "; ".join(f"{c}->{sorted(p)}x{len(by_client[c])}" for c, p in chosen.items())
    stuck = Counter(next(iter(p)) for p in chosen.values() if len(p) == 1)
    if stuck:
        observed += "; clients per endpoint: " + ", ".join(
            f"{e}={stuck.get(e, 0)}" for e in [*endpoints, *sorted(set(stuck) - set(endpoints))])
    return Verdict(check, not failures, expected, observed or "no probes", failures,
                   alpha=spread_alpha, power={"no-affinity": pw} if n >= 2 else {},
                   sample_size=len(observations), probes=observations, notes=notes)


# --------------------------------------------------------------------------- exact verdicts


def _exact(check: str, observations: Sequence[ObservationLike], expected: str,
           bad: list[tuple[int, str]]) -> Verdict:
    obs = list(observations)
    failures = []
    if not obs:
        failures.append("no probes were sent")
    if bad:
        shown = "; ".join(f"#{i}: {why}" for i, why in bad[:5])
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        failures.append(f"{len(bad)}/{len(obs)} probes violate it: {shown}{more}")
    summary = Counter(_probe_key(o) for o in obs)
    observed = ", ".join(f"{c}x {k}" for k, c in summary.most_common()) or "no probes"
    return Verdict(check, not failures, expected, observed, failures, alpha=0.0,
                   sample_size=len(obs), probes=obs)


def reached_only(observations: Sequence[ObservationLike], allowed_pods: Iterable[str], *,
                 check: str = "reached-only") -> Verdict:
    """Every probe got a reply, from one of ``allowed_pods``."""
    allowed = set(allowed_pods)
    bad = []
    for i, o in enumerate(observations):
        out = outcome_name(o)
        if out != "REPLY":
            bad.append((i, f"{_probe_key(o)} instead of a reply"))
        elif o.pod not in allowed:
            bad.append((i, f"answered by {o.pod}"))
    return _exact(check, observations, f"a reply from one of {sorted(allowed)}", bad)


def reached_on_ports(observations: Sequence[ObservationLike],
                     ports: Mapping[str, Iterable[int]], *,
                     check: str = "reached-on-ports") -> Verdict:
    """Every reply from a pod in ``ports`` arrived on one of that pod's ports (the echo
    server reports the port it was reached on as ``pod_port``). Replies from other pods
    and non-replies are left to the other verdicts."""
    allowed = {pod: set(ps) for pod, ps in ports.items()}
    bad = []
    for i, o in enumerate(observations):
        if outcome_name(o) != "REPLY" or o.pod not in allowed:
            continue
        got = getattr(o, "pod_port", None)
        if got is None:
            bad.append((i, f"pod {o.pod} did not report the port it was reached on"))
        elif got not in allowed[o.pod]:
            bad.append((i, f"pod {o.pod} was reached on port {got}"))
    want = ", ".join(f"{pod}:{'|'.join(map(str, sorted(ps)))}" for pod, ps in sorted(allowed.items()))
    return _exact(check, observations, f"replies reach their pod on its port ({want})", bad)


def reach_samples(n: int, alpha: float = DEFAULT_ALPHA) -> int:
    """Probes after which a proxier spreading uniformly over ``n`` endpoints has left one
    unreached with probability <= n(1-1/n)^N <= ``alpha`` (union bound)."""
    if n <= 1:
        return 1
    return math.ceil(math.log(alpha / n) / math.log(1.0 - 1.0 / n) - 1e-12)


def reach_false_failure(n: int, samples: int) -> float:
    """The union bound n(1-1/n)^N on a uniform proxier leaving an endpoint unreached."""
    return 0.0 if n <= 1 else min(1.0, n * (1.0 - 1.0 / n) ** samples)


def reached_all(observations: Sequence[ObservationLike], endpoints: Sequence[tuple[str, int | None]],
                *, check: str = "reached-all") -> Verdict:
    """Each of ``endpoints`` ((pod, port or None for any port)) answered at least once.
    Statistical on a proxier that balances: false-failure probability
    ``reach_false_failure(n, N)`` (``reach_samples`` makes it <= DEFAULT_ALPHA)."""
    wanted = list(dict.fromkeys(endpoints))
    n, N = len(wanted), len(observations)
    replies = [o for o in observations if outcome_name(o) == "REPLY"]
    seen = Counter((o.pod, getattr(o, "pod_port", None)) for o in replies)

    def hits(pod: str, port: int | None) -> int:
        return sum(c for (p, pp), c in seen.items() if p == pod and (port is None or pp == port))

    rows = [EndpointCount(f"{pod}:{port}" if port else pod, hits(pod, port), N / n if n else 0)
            for pod, port in wanted]
    unseen = [r.endpoint for r in rows if not r.observed]
    alpha = reach_false_failure(n, N)
    failures = [f"never reached in {N} probes: {unseen} (chance for a proxier spreading "
                f"uniformly <= {alpha:.3g})"] if unseen else []
    return Verdict(check, not failures, f"each of {n} endpoints answers at least once",
                   ", ".join(f"{r.endpoint}={r.observed}" for r in rows), failures,
                   alpha=alpha, sample_size=N, per_endpoint=rows)


# ICMPv4 destination-unreachable codes and their ICMPv6 counterparts (RFC 4443 section 3.1),
# as ip6tables' REJECT and nft's reject choose them: port unreachable (3,3)->(1,4),
# host unreachable (3,1)->(1,3), administratively prohibited (3,13)->(1,1), net unreachable
# (3,0)->(1,0).
ICMP6_EQUIVALENT = {(3, 3): (1, 4), (3, 1): (1, 3), (3, 13): (1, 1), (3, 10): (1, 1),
                    (3, 0): (1, 0)}


def icmp_for(icmp: tuple[int, int], dst: str | None) -> tuple[int, int]:
    """The ICMP (type, code) to expect for a probe to ``dst``: ``icmp`` is written as
    ICMPv4; a probe to an IPv6 address expects the ICMPv6 counterpart."""
    if dst and ":" in dst:
        return ICMP6_EQUIVALENT.get(tuple(icmp), tuple(icmp))  # type: ignore[return-value]
    return tuple(icmp)  # type: ignore[return-value]


def refused(observations: Sequence[ObservationLike], icmp: tuple[int, int] | None = (3, 3), *,
            or_reset: bool = False, check: str = "refused") -> Verdict:
    """Every probe was actively refused: ICMP ``icmp`` (type, code; default port
    unreachable; written as ICMPv4, probes to IPv6 addresses expect the ICMPv6
    counterpart), or a TCP RESET when ``icmp`` is None (or also when ``or_reset``)."""
    want = []
    if icmp is not None:
        kinds = {icmp_for(icmp, o.dst) for o in observations} or {tuple(icmp)}
        want.append(" or ".join(f"ICMP{'v6' if k != tuple(icmp) else ''} type={k[0]} code={k[1]}"
                                for k in sorted(kinds)))
    if icmp is None or or_reset:
        want.append("RESET")
    bad = []
    for i, o in enumerate(observations):
        out = outcome_name(o)
        ok = (out == "RESET" and (icmp is None or or_reset)) or (
            out == "ICMP" and icmp is not None
            and (o.icmp_type, o.icmp_code) == icmp_for(icmp, o.dst))
        if not ok:
            bad.append((i, _probe_key(o)))
    return _exact(check, observations, " or ".join(want), bad)


def dropped(observations: Sequence[ObservationLike], *, check: str = "dropped") -> Verdict:
    """Every probe met silence (TIMEOUT): no reply, reset or ICMP error."""
    bad = [(i, _probe_key(o)) for i, o in enumerate(observations) if outcome_name(o) != "TIMEOUT"]
    return _exact(check, observations, "silence (every probe times out)", bad)


def source_seen(observations: Sequence[ObservationLike],
                expected: str | Callable[[str | None], bool], *,
                description: str | None = None, check: str = "source-seen") -> Verdict:
    """Every probe got a reply and the pod saw the client as ``expected`` (an address, or a
    predicate on the seen source address; ``description`` names the predicate)."""
    if callable(expected):
        pred = expected
        what = description or getattr(expected, "__name__", "a predicate")
    else:
        want = str(expected)

        def pred(seen: str | None) -> bool:
            return seen == want

        what = want
    bad = []
    for i, o in enumerate(observations):
        if outcome_name(o) != "REPLY":
            bad.append((i, f"{_probe_key(o)} instead of a reply"))
        elif not pred(o.seen_src):
            bad.append((i, f"pod {o.pod} saw source {o.seen_src}"))
    return _exact(check, observations, f"a reply; the pod sees source {what}", bad)


if __name__ == "__main__":
    print(sample_size_table())
