"""Scenario flows -> probes to send and verdicts on what came back, as pure functions.

The scenario runner (``harness.scenario_plugin``) resolves a flow's hosts and addresses,
asks ``probe_plan`` which probes to send, sends them, and hands the observations to
``flow_verdicts``. Everything a flow's keys say is decided here, with no root and no
sockets, so ``tests/unit/test_flow_checks.py`` can plant a wrong value for every key the
loader accepts, on every kind of flow, and require a failure.

Which verdict checks which key (``KEY_CHECKS``; the self-test fails when a key the loader
accepts is missing from it):

* ``from``, ``source``, ``to``, ``port``, ``protocol``, ``sport``, ``count``: the
  ``probes`` verdict -- every probe left from the flow's host (its ``source`` address when
  given, its ``sport`` when given) to the flow's destination, port and protocol, and as
  many probes were sent as the flow's count (or the planner's) says.
* ``expect``: the outcome verdict (``reached_only``, ``refused``, ``dropped``, the
  ``untouched`` verdicts, or the statistical ``uniformity_verdict``/``affinity_verdict``
  when ``distribution``/``affinity`` is set).
* ``expect`` entries written ``ip:port``: also the ``target port`` verdict (the echo server
  reports the port each probe reached; a right pod on a wrong port fails).
* ``reach: all``: the ``reach all`` verdict -- each expected endpoint answered at least
  once, after ``verdicts.reach_samples(n)`` probes unless ``count`` says otherwise (21 for
  2 endpoints, 37 for 3, 70 for 5, 153 for 10: a proxier spreading uniformly leaves one
  unreached with probability <= n(1-1/n)^N <= 1e-6; the verdict states the bound for
  the count it had).
* ``masq``: the ``masq`` verdict, on every flow with endpoints (plain, distribution and
  affinity alike).
* ``interval``: ``probe_plan`` (affinity rounds with idle pauses between them).
* ``expect: {http: STATUS}``: the ``http`` verdict -- every GET was answered with STATUS.
* ``endpoint_of: {flow: X, is: ...}``: the ``endpoint of`` verdict, per source address
  against the endpoints flow X reached from that address (``FlowContext.related``):
  ``same`` (only X's endpoint), ``different`` (never X's), ``independent`` (not every
  address on X's endpoint: a correct proxier fails with probability n^-k for k addresses
  and n endpoints; fewer addresses than make that <= 1e-6 fail as inconclusive).
* ``connection``: the probes are the kept connections (``probes``), each answered by the
  pod that greeted it (``outcome``: a reset or silence means the connection broke).
* ``inject: out-of-window``: the ``inject`` verdict -- a segment was crafted into every
  connection and none reached the client un-NATed (``FlowContext.injected``).
* ``requires``, ``known_gap``: scope (the runner skips the flow, or expects it to fail,
  for the proxier under test; ``FlowResult.outcome`` says so).
* ``name``: a label (the loader refuses duplicates).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import verdicts
from harness.scenario import Flow
from harness.verdicts import ObservationLike, Verdict

#: which verdict (or the probe plan) checks each flow key the loader accepts
KEY_CHECKS = {
    "name": "label",
    "from": "probes", "source": "probes", "to": "probes", "port": "probes",
    "protocol": "probes", "sport": "probes", "count": "probes",
    "expect": "outcome, target port", "distribution": "outcome", "affinity": "outcome",
    "masq": "masq", "reach": "reach all",
    "interval": "plan",
    "endpoint_of": "endpoint of", "connection": "probes, outcome", "inject": "inject",
    "requires": "scope", "known_gap": "scope",
}

#: the largest false-failure probability an ``independent`` check may have
INDEPENDENT_ALPHA = 1e-6

#: probes per plain flow when the file gives no count
DEFAULT_COUNT = 4


@dataclass(frozen=True)
class FlowContext:
    """What the runner resolved for one flow: the addresses the file's names stand for."""

    dst: str  # the destination address (a node name resolved to its address)
    src_addresses: tuple[str, ...]  # the ``from`` host's addresses (or the one address given)
    expected_pods: tuple[str, ...] = ()  # the pods of ``expect`` (a list of endpoints)
    node_addresses: frozenset[str] = frozenset()  # what ``masq: true`` allows the pod to see
    own_pods: frozenset[str] = frozenset()  # pods whose address is the destination itself
    #: endpoint_of: the pods the referred flow's replies came from, by source address
    related: tuple[tuple[str, frozenset[str]], ...] = ()
    #: inject: (segments crafted, what reached the client un-NATed)
    injected: tuple[int, tuple[str, ...]] = (0, ())


@dataclass(frozen=True)
class HttpObservation:
    """One HTTP GET of an ``expect: {http: STATUS}`` flow (the health check node port)."""

    outcome: Any  # an Outcome: REPLY (an HTTP answer), RESET, ICMP, TIMEOUT, ERROR
    src: str
    sport: int
    dst: str
    dport: int
    proto: str = "tcp"
    status: int | None = None
    body: str = ""
    pod: str | None = None
    seen_src: str | None = None
    seen_sport: int | None = None
    pod_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    rtt: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class ProbeCall:
    """One ``probe`` call of a flow's plan."""

    count: int
    source: str | None = None
    sport: int | None = None
    parallel: int | None = None
    wait_before: float = 0.0  # idle seconds before this call (affinity ``interval``)


@dataclass
class FlowResult:
    """One flow's outcome, for the failure message and the report."""

    flow: Flow
    step: str
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None  # the flow could not be run (e.g. no host has its address)
    not_run: str | None = None  # why the flow was not run (an earlier step it depends on failed)
    skipped: str | None = None  # the proxier lacks a capability the flow ``requires``
    gap: str | None = None  # a known gap of the proxier under test (strict: must fail)
    obs: list[Any] = field(default_factory=list)  # for later flows' ``endpoint_of``

    @property
    def outcome(self) -> str:
        if self.not_run is not None:
            return "not run"
        if self.skipped is not None:
            return "skipped"
        bad = bool(self.error or any(not v.passed for v in self.verdicts))
        if self.gap is not None:
            return "known gap" if bad else "failed"  # strict: a gap that passes is stale
        return "failed" if bad else "passed"

    @property
    def failed_verdicts(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.passed]

    def observed(self) -> str:
        if self.not_run is not None:
            return self.not_run
        if self.skipped is not None:
            return self.skipped
        if self.error:
            return self.error
        outcome = [v for v in self.verdicts
                   if ": outcome" in v.check or v.check.endswith(("/uniform", "/client-ip"))]
        return "; ".join(v.observed for v in (outcome or self.verdicts[:1]))

    def to_dict(self) -> dict[str, Any]:
        f = self.flow
        return {"name": f.name, "step": self.step, "line": f.line, "outcome": self.outcome,
                "expected": expected_text(f), "observed": self.observed(),
                "failures": [f"{v.check}: {'; '.join(v.failures) or v.observed}"
                             for v in self.failed_verdicts] + ([self.error] if self.error else []),
                "probes": max((v.sample_size for v in self.verdicts), default=0)}


def expected_text(f: Flow) -> str:
    """The flow's expectation in one line (the report's ``expected`` column)."""
    if isinstance(f.expect, list):
        shown = getattr(f, "written_expect", f.expect)
        exp = "{" + ", ".join(shown) + "}" + (f" ({len(f.expect)} endpoints)" if shown != f.expect else "")
    elif f.http is not None:
        exp = f"HTTP {f.http}"
    elif f.expect == "untouched":
        exp = f"untouched ({f.untouched})"
    else:
        exp = f.expect
    extra = [k for k, on in (("distribution uniform", f.distribution), ("affinity", f.affinity))
             if on]
    if f.masq is not None:
        extra.append(f"masq {str(f.masq).lower()}")
    if f.endpoint_of:
        extra.append(f"endpoint {f.endpoint_of[1]} of {f.endpoint_of[0]!r}")
    if f.connection:
        extra.append(f"{'opens' if f.opens else 'kept'} connection {f.connection!r}"
                     + (f" after an {f.inject} segment" if f.inject else ""))
    return exp + (f" ({', '.join(extra)})" if extra else "")


# ----------------------------------------------------------------------------- the plan


def probe_plan(f: Flow, ctx: FlowContext) -> list[ProbeCall]:
    """The probes a flow sends: how many, from which source address, with which pauses."""
    n = len(set(ctx.expected_pods))
    if f.affinity:
        sources = [f.source] if f.source else list(ctx.src_addresses)
        k = min(len(sources), verdicts.affinity_clients_needed(n))
        m = f.count or verdicts.affinity_connections_needed(n, clients=k)
        if f.interval:
            return [ProbeCall(1, s, wait_before=f.interval if r and i == 0 else 0.0)
                    for r in range(m) for i, s in enumerate(sources[:k])]
        return [ProbeCall(m, s, parallel=1) for s in sources[:k]]
    if f.distribution:
        return [ProbeCall(f.count or verdicts.required_samples(n), f.source)]
    if f.sport:
        return [ProbeCall(1, f.source, f.sport) for _ in range(f.count or 1)]
    if f.reach == "all":
        n = len(set(expected_endpoints(f, ctx)))
        return [ProbeCall(f.count or max(DEFAULT_COUNT, verdicts.reach_samples(n)), f.source)]
    return [ProbeCall(f.count or DEFAULT_COUNT, f.source)]


# ----------------------------------------------------------------------------- verdicts


def flow_verdicts(f: Flow, obs: Sequence[ObservationLike], ctx: FlowContext) -> list[Verdict]:
    """Every verdict a flow's keys ask for, passing or not (the ``probes`` verdict first)."""
    out = [probes_verdict(f, obs, ctx), outcome_verdict(f, obs, ctx)]
    if f.endpoint_of:
        out.append(endpoint_of_verdict(f, obs, ctx))
    if f.inject:
        out.append(inject_verdict(f, obs, ctx))
    ports = expected_ports(f, ctx)
    if ports:
        out.append(verdicts.reached_on_ports(obs, ports, check=f"{f.name}: target port"))
    if f.reach == "all":
        out.append(verdicts.reached_all(obs, expected_endpoints(f, ctx), check=f"{f.name}: reach all"))
    if f.masq is not None:
        out.append(masq_verdict(f, obs, ctx))
    return out


def expected_endpoints(f: Flow, ctx: FlowContext) -> list[tuple[str, int | None]]:
    """``expect``'s entries as (pod, port), the port None for a pod named without one."""
    if not isinstance(f.expect, list):
        return []
    return [(pod, int(e.rsplit(":", 1)[1]) if ":" in e else None)
            for e, pod in zip(f.expect, ctx.expected_pods, strict=True)]


def expected_ports(f: Flow, ctx: FlowContext) -> dict[str, set[int]]:
    """The target ports ``expect`` names (``ip:port`` entries), by pod; pods named without
    a port may be reached on any."""
    out: dict[str, set[int]] = {}
    if isinstance(f.expect, list):
        for e, pod in zip(f.expect, ctx.expected_pods, strict=True):
            if ":" in e:
                out.setdefault(pod, set()).add(int(e.rsplit(":", 1)[1]))
    return out


def probes_verdict(f: Flow, obs: Sequence[ObservationLike], ctx: FlowContext) -> Verdict:
    """The probes went out as the flow says: from its host (and source address, and source
    port), to its destination, port and protocol, as many as its plan has."""
    want_n = sum(c.count for c in probe_plan(f, ctx))
    srcs = {f.source} if f.source else set(ctx.src_addresses)
    bad = []
    for i, o in enumerate(obs):
        why = []
        if str(o.proto or "").lower() != f.protocol.lower():
            why.append(f"protocol {o.proto}")
        if o.dst != ctx.dst:
            why.append(f"to {o.dst}")
        if o.dport != f.port:
            why.append(f"port {o.dport}")
        if o.src not in srcs:
            why.append(f"from {o.src}")
        if f.sport is not None and o.sport != f.sport:
            why.append(f"source port {o.sport}")
        if why:
            bad.append(f"#{i}: " + ", ".join(why))
    failures = []
    if len(obs) != want_n:
        failures.append(f"{len(obs)} probes, the flow's plan has {want_n}")
    if bad:
        failures.append(f"{len(bad)}/{len(obs)} probes are not the flow's: " + "; ".join(bad[:5]))
    want = (f"{want_n} {f.protocol} probes from {sorted(srcs)}"
            + (f" port {f.sport}" if f.sport else "") + f" to {ctx.dst}:{f.port}")
    seen = Counter(f"{o.proto} {o.src} -> {o.dst}:{o.dport}" for o in obs)
    return Verdict(f"{f.name}: probes", not failures, want,
                   ", ".join(f"{n}x {k}" for k, n in seen.most_common()) or "no probes",
                   failures, sample_size=len(obs))


def outcome_verdict(f: Flow, obs: Sequence[ObservationLike], ctx: FlowContext) -> Verdict:
    pods = list(ctx.expected_pods)
    if f.affinity:
        return verdicts.affinity_verdict(obs, pods, check=f"{f.name}: affinity/client-ip")
    if f.distribution:
        counts = Counter(o.pod for o in obs if o.pod)
        return verdicts.uniformity_verdict(counts, pods, observations=obs,
                                           check=f"{f.name}: distribution/uniform")
    check = f"{f.name}: outcome"
    if f.http is not None:
        return http_verdict(f, obs)
    if isinstance(f.expect, list):
        return verdicts.reached_only(obs, pods, check=check)
    if f.expect == "reject":
        return verdicts.refused(obs, check=check)
    if f.expect == "drop":
        return verdicts.dropped(obs, check=check)
    return untouched_verdict(f, obs, ctx)


def untouched_verdict(f: Flow, obs: Sequence[ObservationLike], ctx: FlowContext) -> Verdict:
    """No DNAT: the destination itself handles the packet, as ``untouched`` says: ``reject``
    (ICMP port unreachable), ``reset`` (TCP RST), ``drop`` (silence), ``any`` (anything but
    an answer from a pod other than the destination itself)."""
    check = f"{f.name}: outcome untouched ({f.untouched})"
    if f.untouched == "reject":
        return verdicts.refused(obs, check=check)
    if f.untouched == "reset":
        return verdicts.refused(obs, icmp=None, check=check)
    if f.untouched == "drop":
        return verdicts.dropped(obs, check=check)
    bad = [(i, f"answered by {o.pod}") for i, o in enumerate(obs)
           if o.pod is not None and o.pod not in ctx.own_pods]
    return verdicts._exact(check, obs, "no translation: no endpoint answers", bad)


def http_verdict(f: Flow, obs: Sequence[Any]) -> Verdict:
    """``expect: {http: STATUS}``: every GET answered, with STATUS."""
    bad = []
    for i, o in enumerate(obs):
        if verdicts.outcome_name(o) != "REPLY":
            bad.append((i, f"{verdicts._probe_key(o)} instead of an HTTP answer"))
        elif o.status != f.http:
            bad.append((i, f"HTTP {o.status} {o.body[:80]!r}"))
    v = verdicts._exact(f"{f.name}: outcome http", obs, f"HTTP status {f.http}", bad)
    v.observed = ", ".join(f"{n}x {k}" for k, n in Counter(
        f"HTTP {o.status} {o.body[:60]}".strip() if o.status is not None
        else verdicts._probe_key(o) for o in obs).most_common()) or "no probes"
    return v


def endpoint_of_verdict(f: Flow, obs: Sequence[ObservationLike], ctx: FlowContext) -> Verdict:
    """``endpoint_of``: this flow's endpoints against flow X's, per source address."""
    assert f.endpoint_of is not None
    other, rel = f.endpoint_of
    related = dict(ctx.related)
    check = f"{f.name}: endpoint {rel} of {other!r}"
    replies = [(i, o) for i, o in enumerate(obs) if verdicts.outcome_name(o) == "REPLY"]
    if rel in ("same", "different"):
        bad = []
        for i, o in replies:
            theirs = related.get(str(o.src))
            if theirs is None:
                bad.append((i, f"flow {other!r} had no reply from {o.src} to compare with"))
            elif rel == "same" and theirs != {o.pod}:
                bad.append((i, f"{o.src} reached {o.pod}, flow {other!r} {sorted(theirs)}"))
            elif rel == "different" and o.pod in theirs:
                bad.append((i, f"{o.src} reached {o.pod}, as in flow {other!r}"))
        want = ("from each source address, the one endpoint flow X reached" if rel == "same"
                else "from each source address, an endpoint flow X did not reach")
        return verdicts._exact(check, [o for _, o in replies] or list(obs),
                               want.replace("X", repr(other)), bad)
    mine: dict[str, set[str]] = {}
    for _, o in replies:
        mine.setdefault(str(o.src), set()).add(str(o.pod))
    common = [a for a in mine if len(mine[a]) == 1 and len(related.get(a, ())) == 1]
    n = len(set(ctx.expected_pods))
    alpha = float(n) ** -len(common) if common else 1.0
    same = [a for a in common if mine[a] == related[a]]
    failures = []
    if alpha > INDEPENDENT_ALPHA:
        need = math.ceil(math.log(1 / INDEPENDENT_ALPHA) / math.log(n)) if n > 1 else 0
        failures.append(f"inconclusive: {len(common)} source addresses with one endpoint in both "
                        f"flows give a false-failure probability {alpha:.3g} > "
                        f"{INDEPENDENT_ALPHA:g}; {need} are needed (topology.clients "
                        "extra_addresses, and affinity on both flows)")
    elif len(same) == len(common):
        failures.append(f"all {len(common)} source addresses reached the same endpoint as in "
                        f"flow {other!r} (chance for independent choices {alpha:.3g})")
    observed = (f"{len(same)} of {len(common)} source addresses on flow {other!r}'s endpoint: "
                + "; ".join(f"{a}->{sorted(mine[a])} (X: {sorted(related[a])})"
                            for a in common[:6]))
    return Verdict(check, not failures,
                   f"endpoints chosen independently of flow {other!r}: not every source address "
                   f"on its endpoint", observed, failures, alpha=alpha if not failures else 0.0,
                   sample_size=len(common))


def inject_verdict(f: Flow, obs: Sequence[ObservationLike], ctx: FlowContext) -> Verdict:
    """``inject: out-of-window``: a segment went into every connection and none of them
    reached the client with the endpoint's own address (no NAT: conntrack INVALID)."""
    sent, leaked = ctx.injected
    failures = []
    if sent != len(obs):
        failures.append(f"{sent} segments crafted for {len(obs)} connections")
    if leaked:
        failures.append(f"{len(leaked)} reached the client un-NATed: " + "; ".join(leaked[:5]))
    return Verdict(f"{f.name}: inject {f.inject}", not failures,
                   "an out-of-window segment from the endpoint into each connection, dropped "
                   "as conntrack INVALID before the client",
                   f"{sent} crafted, {len(leaked)} reached the client", failures,
                   sample_size=sent)


def masq_verdict(f: Flow, obs: Sequence[ObservationLike], ctx: FlowContext) -> Verdict:
    """``masq: true``: every reply saw a node address; ``false``: the client's own."""
    if f.masq:
        nodes = ctx.node_addresses
        return verdicts.source_seen(obs, lambda seen: seen in nodes,
                                    description=f"a node address (one of {sorted(nodes)})",
                                    check=f"{f.name}: masq true")
    bad = []
    for i, o in enumerate(obs):
        if verdicts.outcome_name(o) != "REPLY":
            bad.append((i, f"{verdicts._probe_key(o)} instead of a reply"))
        elif o.seen_src != o.src:
            bad.append((i, f"pod {o.pod} saw source {o.seen_src}, the client is {o.src}"))
    return verdicts._exact(f"{f.name}: masq false", obs,
                           "a reply; the pod sees the client's own address", bad)


def dependent_flows(failed: Sequence[Flow], later: Sequence[Flow]) -> list[Flow]:
    """The failed flows that later flows depend on: the same protocol, host and fixed
    source port (one connection followed across steps, whose later expectation presumes
    the earlier one held). Other later flows run after a failure."""
    keys = {(f.protocol, f.src, f.source, f.sport) for f in later if f.sport}
    conns = {f.connection for f in later if f.connection}
    return [f for f in failed if (f.sport and (f.protocol, f.src, f.source, f.sport) in keys)
            or (f.connection and f.connection in conns)]
