"""harness.verdicts: sample sizes have the stated power and false-failure rate; messages explain.

Pure and root-free. Simulations use fixed seeds, so the outcomes are deterministic.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness import verdicts as v


class Outcome(enum.Enum):
    # Stand-in for harness.traffic.probe.Outcome: verdicts only read member names.
    REPLY = "reply"
    RESET = "reset"
    ICMP = "icmp"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True)
class Obs:
    outcome: Outcome
    pod: str | None = None
    seen_src: str | None = None
    seen_sport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    rtt: float | None = 0.001
    src: str = "192.0.2.10"
    sport: int = 40000
    dst: str = "10.96.0.10"
    dport: int = 80
    proto: str = "tcp"


def reply(pod: str, seen: str = "192.0.2.10", src: str = "192.0.2.10") -> Obs:
    return Obs(Outcome.REPLY, pod=pod, seen_src=seen, seen_sport=40000, src=src)


def rejects(p_values: np.ndarray, alpha: float) -> np.ndarray:
    return p_values < alpha


def chi_p_values(counts: np.ndarray) -> np.ndarray:
    """p-values of the verdict's test, vectorised over simulated runs (rows)."""
    n = counts.shape[1]
    exp = np.full(n, counts[0].sum() / n)  # every simulated run has the same N
    return stats.chisquare(counts, exp, axis=1).pvalue


def test_observation_protocol_matches_stand_in() -> None:
    assert isinstance(reply("a"), v.ObservationLike)


# ------------------------------------------------------------------ sample sizes and power


def test_documented_table_is_what_the_function_computes() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "verdicts.md").read_text()
    table = v.sample_size_table()
    for line in table.splitlines():
        assert line in doc, f"the table in docs/verdicts.md is stale; regenerate:\n{table}"


@pytest.mark.parametrize("n,expected", [(2, 64), (3, 13683), (5, 5322), (10, 2804)])
def test_required_samples_values(n: int, expected: int) -> None:
    assert v.required_samples(n) == expected


def test_two_decimal_rounding_is_documented_as_not_covered() -> None:
    for n in (3, 5, 10):
        assert v.sample_plan(n).not_covered == ["rounded-2dp"]
    assert v.sample_plan(2).not_a_fault == ["cascade-1/n", "rounded-1dp", "rounded-2dp"]


def test_fault_distributions() -> None:
    np.testing.assert_allclose(v.FAULTS["cascade-1/n"].probabilities(3), [1 / 3, 2 / 9, 4 / 9])
    np.testing.assert_allclose(v.FAULTS["rounded-1dp"].probabilities(3), [0.3, 0.35, 0.35])
    # 1/4 = 0.25 is an exact tie: "%0.1f" rounds it to even, "0.2", as Go's fmt does.
    np.testing.assert_allclose(v.FAULTS["rounded-1dp"].probabilities(5),
                               [0.2, 0.16, 0.192, 0.224, 0.224])
    np.testing.assert_allclose(v.FAULTS["missing-endpoint"].probabilities(5), [0.25] * 4 + [0])
    for f in v.FAULTS.values():
        for n in (2, 3, 5, 10):
            assert f.probabilities(n).sum() == pytest.approx(1.0)


SIM_RUNS = 2000


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_power_by_simulation_at_each_faults_own_sample_size(n: int) -> None:
    """At each fault's own N (power ~0.999, the hard case), an independent simulation
    (different seed from the plan's) misses about 2 in 2000."""
    rng = np.random.default_rng(20261124 + n)
    for fp in v.sample_plan(n).faults:
        if not fp.detectable:
            continue
        probs = v.FAULTS[fp.fault].probabilities(n)
        counts = rng.multinomial(fp.samples, probs, size=SIM_RUNS)
        misses = int((~rejects(chi_p_values(counts), v.DEFAULT_ALPHA)).sum())
        # Binomial(2000, 0.001): P(misses > 10) < 1e-5.
        assert misses <= 10, (n, fp.fault, fp.samples, misses)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_power_by_simulation_at_required_samples_via_verdict(n: int) -> None:
    """Through uniformity_verdict itself, at required_samples(n): at most 2 of 200 faulty
    runs pass (expected <= 0.2 at power 0.999; P(> 2) ~ 1e-3 -- the seed is fixed)."""
    rng = np.random.default_rng(7 + n)
    N = v.required_samples(n)
    eps = [f"pod-{i}" for i in range(n)]
    for name in v.sample_plan(n).covered:
        probs = v.FAULTS[name].probabilities(n)
        # The faulty endpoint order is arbitrary; shuffle so "missing" is not always last.
        passed = 0
        for row in rng.multinomial(N, probs, size=200):
            counts = dict(zip(rng.permutation(eps), row.tolist(), strict=True))
            passed += v.uniformity_verdict(counts, eps).passed
        assert passed <= 2, (n, name, N, passed)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_false_failure_rate_by_simulation(n: int) -> None:
    """Uniform counts at N=required_samples(n), tested at alpha=0.01 (1e-6 is unsimulable):
    the rejection rate is alpha within sampling error."""
    alpha, runs = 0.01, 20000
    rng = np.random.default_rng(99 + n)
    N = v.required_samples(n)
    counts = rng.multinomial(N, [1 / n] * n, size=runs)
    rate = rejects(chi_p_values(counts), alpha).mean()
    sd = (alpha * (1 - alpha) / runs) ** 0.5  # 0.0007
    assert abs(rate - alpha) < 4 * sd, (n, N, rate)


def test_false_failure_rate_through_verdict() -> None:
    rng = np.random.default_rng(5)
    eps = ["a", "b", "c", "d", "e"]
    N = v.required_samples(5)
    fails = sum(not v.uniformity_verdict(dict(zip(eps, r.tolist(), strict=True)), eps,
                                         alpha=0.01).passed
                for r in rng.multinomial(N, [0.2] * 5, size=3000))
    assert 10 <= fails <= 55  # mean 30, sd ~5.4


def test_power_function_agrees_with_plan() -> None:
    for n in (3, 5, 10):
        for fp in v.sample_plan(n).faults:
            if fp.detectable:
                probs = v.FAULTS[fp.fault].probabilities(n)
                assert v.chi_square_power(n, fp.ncx2_samples, probs) >= 0.999
                assert v.chi_square_power(n, fp.ncx2_samples - 1, probs) < 0.999
                assert fp.samples >= fp.ncx2_samples


def test_sample_plan_rejects_single_endpoint() -> None:
    with pytest.raises(ValueError):
        v.required_samples(1)


# ------------------------------------------------------------------ uniformity verdicts


def test_uniform_passes_and_explains() -> None:
    verdict = v.uniformity_verdict({"a": 1010, "b": 990, "c": 1000}, ["a", "b", "c"])
    assert verdict.passed, verdict.explain()
    text = verdict.explain()
    assert "expected" in text and "observed" in text and "1010" in text
    assert verdict.sample_size == 3000 and verdict.alpha == 1e-6
    assert 0 < verdict.p_value <= 1
    json.dumps(verdict.to_dict())


def test_stray_endpoint_fails_exactly() -> None:
    verdict = v.uniformity_verdict({"a": 500, "b": 500, "zombie": 1}, ["a", "b"])
    assert not verdict.passed
    assert "zombie" in verdict.explain() and "unexpected" in verdict.explain()


def test_never_seen_endpoint_fails_exactly() -> None:
    verdict = v.uniformity_verdict({"a": 700, "b": 700}, ["a", "b", "c"])
    assert not verdict.passed
    assert any("never seen" in f for f in verdict.failures)
    assert "never seen" in verdict.explain()


def test_never_seen_check_disabled_on_tiny_samples() -> None:
    # 3 answers over 2 endpoints: "b unseen" has probability 1/4 under uniform; not evidence.
    verdict = v.uniformity_verdict({"a": 3}, ["a", "b"])
    assert verdict.passed
    assert any("too small" in n for n in verdict.notes)


def test_cascade_fault_fails_with_table() -> None:
    n = 5
    N = v.required_samples(n)
    probs = v.FAULTS["cascade-1/n"].probabilities(n)
    eps = [f"pod-{i}" for i in range(n)]
    counts = {e: int(round(p * N)) for e, p in zip(eps, probs, strict=True)}
    verdict = v.uniformity_verdict(counts, eps)
    assert not verdict.passed
    text = verdict.explain()
    for e, c in counts.items():
        assert e in text and str(c) in text
    assert f"{N / n:.1f}" in text  # expected count per endpoint
    assert verdict.power["cascade-1/n"] > 0.999999


def test_uniformity_with_observations_reports_non_replies() -> None:
    obs = [reply("a"), reply("b")] * 50 + [Obs(Outcome.TIMEOUT)]
    verdict = v.uniformity_verdict(v.count_endpoints(obs), ["a", "b"], observations=obs)
    assert not verdict.passed
    assert "TIMEOUT" in verdict.explain() and "#0" in verdict.explain()


# ------------------------------------------------------------------ affinity


@pytest.mark.parametrize("n,k,m1", [(2, 21, 11), (3, 14, 8), (5, 10, 6), (10, 7, 4)])
def test_affinity_sizes(n: int, k: int, m1: int) -> None:
    assert v.affinity_clients_needed(n) == k
    assert float(n) ** (1 - k) <= 1e-6 < float(n) ** (2 - k)
    assert v.affinity_connections_needed(n) == m1
    assert float(n) ** (1 - m1) <= 1e-3 < float(n) ** (2 - m1)
    assert v.affinity_power(n, [m1]) >= 0.999
    assert v.affinity_connections_needed(n, clients=k) == 2


def test_affinity_power_by_simulation() -> None:
    """A non-sticky proxier (uniform per connection) is caught at the computed m."""
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 10):
        m = v.affinity_connections_needed(n)
        picks = rng.integers(0, n, size=(5000, m))
        looks_sticky = (picks == picks[:, :1]).all(axis=1).mean()
        assert looks_sticky <= 0.003, (n, m, looks_sticky)


def _affinity_obs(assign: dict[str, list[str]]) -> list[Obs]:
    return [reply(pod, seen=c, src=c) for c, pods in assign.items() for pod in pods]


def test_affinity_sticky_and_spread_passes() -> None:
    eps = ["a", "b", "c"]
    k = v.affinity_clients_needed(3)
    rng = np.random.default_rng(1)
    assign = {f"192.0.2.{i}": [eps[rng.integers(3)]] * 8 for i in range(k)}
    verdict = v.affinity_verdict(_affinity_obs(assign), eps)
    assert verdict.passed, verdict.explain()
    assert verdict.alpha == pytest.approx(3.0 ** (1 - k))
    assert verdict.power["no-affinity"] > 0.999


def test_affinity_non_sticky_client_fails() -> None:
    verdict = v.affinity_verdict(_affinity_obs({"192.0.2.1": ["a", "a", "b"]}), ["a", "b"])
    assert not verdict.passed
    assert "192.0.2.1 reached 2 endpoints" in verdict.explain()


def test_affinity_all_on_one_endpoint_fails_only_with_enough_clients() -> None:
    k = v.affinity_clients_needed(2)
    few = v.affinity_verdict(_affinity_obs({f"192.0.2.{i}": ["a"] * 11 for i in range(3)}),
                             ["a", "b"])
    assert few.passed and any("not checked" in n for n in few.notes)
    many = v.affinity_verdict(_affinity_obs({f"192.0.2.{i}": ["a"] * 2 for i in range(k)}),
                              ["a", "b"])
    assert not many.passed and f"all {k} clients went to a" in many.explain()


# ------------------------------------------------------------------ exact verdicts


def test_reached_only() -> None:
    assert v.reached_only([reply("a"), reply("b")], {"a", "b"}).passed
    bad = v.reached_only([reply("a"), reply("x"), Obs(Outcome.RESET)], {"a"})
    assert not bad.passed
    text = bad.explain()
    assert "expected: a reply from one of ['a']" in text
    assert "#1: answered by x" in text and "RESET" in text
    assert not v.reached_only([], {"a"}).passed  # no probes is never a pass


def test_refused() -> None:
    icmp = Obs(Outcome.ICMP, icmp_type=3, icmp_code=3)
    assert v.refused([icmp] * 3).passed
    assert not v.refused([icmp, Obs(Outcome.ICMP, icmp_type=3, icmp_code=13)]).passed
    assert not v.refused([icmp, Obs(Outcome.TIMEOUT)]).passed
    assert v.refused([Obs(Outcome.RESET)], icmp=None).passed
    assert not v.refused([icmp], icmp=None).passed
    assert v.refused([icmp, Obs(Outcome.RESET)], or_reset=True).passed
    text = v.refused([Obs(Outcome.TIMEOUT)]).explain()
    assert "ICMP type=3 code=3" in text and "TIMEOUT" in text


def test_refused_over_ipv6_expects_the_icmpv6_counterpart() -> None:
    v6 = dict(src="2001:db8:c0:2::65", dst="fd00:10:96::101")
    port6 = Obs(Outcome.ICMP, icmp_type=1, icmp_code=4, **v6)
    assert v.refused([port6] * 2).passed
    # the IPv4 code on an IPv6 probe, or ICMPv6 admin-prohibited, is not port unreachable
    assert not v.refused([Obs(Outcome.ICMP, icmp_type=3, icmp_code=3, **v6)]).passed
    assert not v.refused([Obs(Outcome.ICMP, icmp_type=1, icmp_code=1, **v6)]).passed
    assert v.refused([Obs(Outcome.ICMP, icmp_type=1, icmp_code=1, **v6)], icmp=(3, 13)).passed
    assert "ICMPv6 type=1 code=4" in v.refused([Obs(Outcome.TIMEOUT, **v6)]).explain()


def test_dropped() -> None:
    assert v.dropped([Obs(Outcome.TIMEOUT)] * 4).passed
    verdict = v.dropped([Obs(Outcome.TIMEOUT), reply("a")])
    assert not verdict.passed and "silence" in verdict.explain() and "pod=a" in verdict.explain()


def test_source_seen() -> None:
    obs = [reply("a", seen="192.0.2.10"), reply("b", seen="10.0.0.1")]
    verdict = v.source_seen(obs, "192.0.2.10")
    assert not verdict.passed
    assert "pod b saw source 10.0.0.1" in verdict.explain()
    assert v.source_seen(obs, lambda s: s is not None, description="any").passed


def test_probe_table_is_compact() -> None:
    obs = [reply("a")] * 25 + [Obs(Outcome.TIMEOUT)] * 5
    table = v.probe_table(obs)
    assert table.count("\n  #") == 9  # 10 rows
    assert "... 20 more" in table and "25 x REPLY pod=a" in table and "5 x TIMEOUT" in table


def test_to_dict_is_json() -> None:
    verdict = v.refused([Obs(Outcome.ICMP, icmp_type=3, icmp_code=3)])
    d = json.loads(json.dumps(verdict.to_dict()))
    assert d["passed"] and d["probes"][0]["outcome"] == "ICMP" and d["alpha"] == 0.0
