"""Scenario files: Kubernetes objects + where clients stand + what packets must do.

A scenario is one YAML file (``scenarios/**/*.yaml``) describing a Service bug or behaviour
in kube-proxy's ``packetFlowTest`` vocabulary. It is loaded strictly: unknown keys, duplicate
keys and names, and dangling references (a flow from a host that does not exist, an expected
endpoint that is in no EndpointSlice) are ``ScenarioError``s naming the file and line.

Format (every key but ``description``, ``objects`` and one of ``flows``/``steps`` optional)::

    description: UDP conntrack entries survive an endpoint change ...
    must: A UDP flow MUST follow its Service's endpoints when they change.  # for reports
    references: [https://github.com/kubernetes/kubernetes/issues/19029]
    caught_by_fault: udp-cleanup-skipped         # tests/faulty fault reproducing the bug
    history:                                     # where the bug is in Kubernetes' releases
      component: kube-proxy                      # kube-proxy | kubelet | kubeadm | none
      fixed_in: v1.23.0                          # first release with the fix | unknown | none
      fixed_by: [https://github.com/kubernetes/kubernetes/pull/104009]
      cherry_picks: [v1.20.11, v1.21.5]          # patch releases of older lines with it
      introduced_in: v1.22.0                     # or unknown
      last_buggy: v1.19.16                       # newest release still buggy | unknown | none
      modes: [iptables, ipvs]                    # kube-proxy modes that had it (default all)
      note: ...                                  # what else a reader should know
    known_gaps:                                  # proxiers known to fail it: strict xfail
      - {proxier: reference, reason: ...}
    features: [conntrack]                        # feature markers (harness.plugin)
    objects: dump.yaml                           # kubectl get -o yaml output (List or
                                                 # multi-document), relative to this file,
                                                 # or a list of inline objects
    topology:                                    # overrides; pods come from the slices
      pod_network: routed | bridge
      hairpin_mode: false
      client_gateway: node-a
      nodes: [{name: node-c}]                    # extra nodes without endpoints; also
                                                 # pod_cidr, ip, extra_addresses
      clients: [{name: client, ip: 192.0.2.101, extra_addresses: 0}]
      pods: [{name: curl, node: node-a}]         # extra pods that are no endpoint
    proxier:
      cluster_cidr: 10.244.0.0/16                # "" = run the proxier without one
      masquerade_all: false
      nodeport_addresses: [192.0.2.0/24]
      localhost_nodeports: true
      capabilities: [affinity]                   # other proxiers: skip unless declared
    flows:                                       # checked once the objects are applied
      - {name: ..., from: client, protocol: UDP, to: 10.96.0.10, port: 53,
         expect: [10.244.1.5:53], masq: true}
    steps:                                       # then, in order
      - apply: [...objects...]                   # or a file name
      - delete: [{kind: EndpointSlice, namespace: default, name: dns-abc}]
      - restart_proxier: node-a                  # or "all"; traffic: {...} flows through it
      - wait: 2                                  # seconds of idleness (a timeout expiring)
      - flows: [...]

A flow: ``from`` is a host (client, node or pod name) or one of their addresses; ``to`` an
address or a node name; ``expect`` a list of endpoints (``ip:port`` or pod names), or
``reject`` (ICMP port unreachable), ``drop`` (silence), or ``{untouched: X}`` (no DNAT:
the destination itself handles the packet, and X says how: ``reject`` (ICMP port
unreachable), ``reset`` (TCP RST), ``drop`` (silence), or ``any`` (anything but an
endpoint's answer, only when that is chosen on purpose)); ``masq`` whether the endpoint must see a node address
(true) or the client's own (false). Optional: ``count`` probes, ``sport`` (a fixed source
port: one UDP "connection" across steps), ``source`` (one of the host's addresses),
``distribution: uniform`` and ``affinity: true`` (statistical, harness.verdicts; the probe
count then comes from the stated error rates unless ``count`` is given); ``reach: all``
(each expected endpoint answers at least once: ``harness.flowcheck.reach_samples`` probes,
21 for 2 endpoints, 37 for 3, 70 for 5, 153 for 10, so that a proxier balancing uniformly
fails with probability <= 1e-6); ``interval``
(affinity: the connections of each client address are made in rounds this many idle
seconds apart, so stickiness must outlast the pause).

Constructs for what bug reports need (issue 16):

* ``topology.listeners: [{name, node, port, protocol}]``: a process in a node's own
  namespace (the echo server, answering as ``name``) on a port the proxier may also
  handle; flows expect it by name (kubernetes#97360, #43969).
* ``expect: {http: STATUS}``: each probe is an HTTP GET answered with STATUS (a node's
  health check node port: 200 with local endpoints, 503 without; kubernetes#44311).
* ``connection: NAME``: TCP connections kept open across steps. The first flow naming it
  opens ``count`` connections (each answered by the pod that greets it); every later flow
  naming it (same from/to/port/source, no count) sends a line on each and expects the
  same pod to echo it, so a reset or silence fails (kubernetes#75360: a proxier restart).
* ``inject: out-of-window`` (on a connection flow): first a TCP segment far beyond the
  client's window is crafted from each connection's endpoint (scapy, its own address and
  port); none may reach the client un-NATed (kubernetes#74839).
* ``endpoint_of: {flow: X, is: same|different|independent}``: per source address, this
  flow's endpoints against those an earlier flow X reached: only X's, never X's, or not
  every address on X's (a correct proxier fails ``independent`` with probability n^-k for
  n endpoints and k addresses; fewer addresses than make that <= 1e-6 fail as
  inconclusive; kubernetes#103000).
* ``requires: [capability]``: the flow is skipped (reported "skipped", with the reason)
  for a proxier that does not declare the capability; the other flows still run.
* ``known_gap: [{proxier, reason}]``: the flow is expected to fail for that proxier
  (reported "known gap"; strict: one that passes fails, so the entry goes). The reason
  must carry a link.
* ``objects: [{generate: EndpointSlice, service, namespace, endpoints: [{node, count,
  first}], ports, per_slice, pod_prefix}]``: the slices the EndpointSlice controller would
  write for hundreds of ready pods (100 per slice, addresses consecutive from ``first``,
  pods ``PREFIX-0`` ...), and ``expect: ["PREFIX-*"]``: endpoint patterns (fnmatch over
  endpoint pod and listener names; kubernetes#83599).
* An EndpointSlice endpoint without ``nodeName`` runs on the node whose pod CIDR holds its
  address (``topology.nodes[].pod_cidr`` or a Node's ``spec.podCIDR``); the slice keeps no
  nodeName, so no proxier may count it local (kubernetes#48437).
* ``topology.nodes[].extra_addresses: [ADDR, ...]``: further addresses on the node's lan
  interface (a VIP, an externalIP or LB IP assigned to the node): in the lan, or in the
  external-IP or LB range (host routes via the node on clients and other nodes). Flows
  go ``to`` them, and ``from: NODE, source: ADDR`` sends from one (the LB IP as a
  packet source); the Node object keeps its InternalIP only (kubernetes#111863).
* ``traffic: {from, to, port, sport, after, every}`` on an ``apply`` or
  ``restart_proxier`` step: UDP datagrams from one source port flow from half a second
  before the step's action until ``after`` seconds (default 2) after the proxier applied the result,
  one every ``every`` seconds (default 0.05): traffic already flowing when the proxier
  first learns of a Service, or while it restarts. A later flow with the same ``sport``
  shows where the stream's conntrack entry points (kubernetes#126468: entries made before
  the first sync with the Service bypass its DNAT unless the proxier clears them).
* A flow over SCTP on a kernel without SCTP sockets is skipped with the reason (the pods do
  not listen on SCTP ports then); a scenario whose every flow is skipped is skipped.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.topology.spec import (
    IPV6_PLAN,
    ClientSpec,
    TopologyError,
    topology_from_objects,
    validate,
)
from servicemodel.names import PROTOCOLS

OUTCOMES = ("reject", "drop")  # and {untouched: ...} (UNTOUCHED)


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names file, line and what to do."""

    def __init__(self, path: str | Path, line: int | None, problem: str, hint: str = "") -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.hint = hint
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {problem}" + (f" -- {hint}" if hint else ""))


# ----------------------------------------------------------------------------- the model


@dataclass
class Flow:
    name: str
    src: str  # host name or address
    protocol: str
    to: str
    port: int
    expect: list[str] | str  # endpoints (ip:port or pod names) or one of OUTCOMES
    masq: bool | None = None
    count: int | None = None
    sport: int | None = None
    source: str | None = None
    distribution: str | None = None
    affinity: bool = False
    interval: float = 0.0  # affinity: idle seconds between rounds of connections
    line: int = 0
    untouched: str | None = None  # expect {untouched: X}: one of UNTOUCHED
    reach: str | None = None  # "all": every expected endpoint must answer at least once
    http: int | None = None  # expect {http: STATUS}: an HTTP GET answered with STATUS
    endpoint_of: tuple[str, str] | None = None  # (flow name, same|different|independent)
    connection: str | None = None  # TCP connections kept open across steps, by name
    opens: bool = False  # the first flow of its connection (it opens them)
    inject: str | None = None  # crafted packet sent into the connection first: INJECTIONS
    requires: list[str] = field(default_factory=list)  # capabilities; else the flow is skipped
    known_gaps: dict[str, str] = field(default_factory=dict)  # proxier -> reason (strict)

    def describe(self) -> str:
        shown = getattr(self, "written_expect", self.expect)
        exp = shown if isinstance(shown, str) else "{" + ", ".join(shown) + "}"
        masq = "" if self.masq is None else f", masq {str(self.masq).lower()}"
        return (f"{self.name!r}: from {self.src} {self.protocol} to {self.to}:{self.port} "
                f"-> {exp}{masq}")


@dataclass(frozen=True)
class Listener:
    """A process on a node (``topology.listeners``): the echo server in the node's own
    namespace on ``port``, answering with ``name`` (a flow can expect it by that name)."""

    name: str
    node: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Traffic:
    """An ``apply`` or ``restart_proxier`` step's ``traffic``: UDP datagrams from one fixed
    source port, sent every ``every`` seconds from before the step's action until ``after``
    seconds after the proxier applied the result (traffic flowing through that sync)."""

    src: str
    to: str
    port: int
    sport: int
    after: float = 2.0
    every: float = 0.05
    line: int = 0


@dataclass
class Step:
    kind: str  # apply | delete | restart_proxier | wait | flows
    line: int
    name: str = ""
    objects: list[Any] = field(default_factory=list)  # lightkube objects (apply)
    deletes: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, ns, name)
    node: str = ""
    seconds: float = 0.0
    flows: list[Flow] = field(default_factory=list)
    traffic: Traffic | None = None  # apply/restart_proxier: datagrams flowing through it


def _v(text: str) -> Any:
    from harness.kubebins import Version

    return Version.parse(text)


#: the first kube-proxy release with --iptables-localhost-nodeports (kubernetes#108250)
LOCALHOST_NODEPORTS_FLAG = _v("v1.26.0")


@dataclass
class ProxierSettings:
    cluster_cidr: str | None = None  # None: the topology's; "": none
    masquerade_all: bool = False
    nodeport_addresses: list[str] = field(default_factory=list)
    localhost_nodeports: bool | None = None
    capabilities: list[str] = field(default_factory=list)

    def refproxier_args(self) -> list[str]:
        """Extra flags in kube-proxy's names and ``--flag=value`` form, which both kube-proxy
        (pflag: a bool flag takes its value only after ``=``) and the reference proxier read."""
        out = []
        if self.masquerade_all:
            out.append("--masquerade-all")
        if self.nodeport_addresses:
            out.append("--nodeport-addresses=" + ",".join(self.nodeport_addresses))
        if self.localhost_nodeports is not None:
            out.append(f"--iptables-localhost-nodeports={str(self.localhost_nodeports).lower()}")
        return out

    def kube_proxy_args(self, release: str | None) -> tuple[list[str], list[str]]:
        """Extra flags for real kube-proxy ``release`` (same names as the reference's), and
        notes on settings that release has no flag for (it then runs without them, as a
        cluster of that release did). The cluster CIDR is the command's own flag."""
        from harness.kubebins import Version

        v = Version.parse(release) if release else None
        out, notes = [], []
        if self.masquerade_all:
            out.append("--masquerade-all=true")
        if self.nodeport_addresses:
            out.append("--nodeport-addresses=" + ",".join(self.nodeport_addresses))
        if self.localhost_nodeports is not None:
            if v is None or v >= LOCALHOST_NODEPORTS_FLAG:
                out.append(f"--iptables-localhost-nodeports={str(self.localhost_nodeports).lower()}")
            else:
                notes.append(f"kube-proxy {release} has no --iptables-localhost-nodeports (new in "
                             f"{LOCALHOST_NODEPORTS_FLAG}): it runs with localhost nodePorts on")
        return out, notes

    @property
    def customised(self) -> bool:
        return bool(self.refproxier_args()) or self.cluster_cidr is not None


HISTORY_COMPONENTS = ("kube-proxy", "kubelet", "kubeadm", "none")
PROXY_MODES = ("iptables", "ipvs", "nftables", "userspace")


@dataclass
class History:
    """Where a bug is in Kubernetes' releases (``history:`` of a scenario file).

    ``fixed_in`` is the first release whose line carried the fix from its start (a
    ``v1.MINOR.0``, usually), ``cherry_picks`` the patch releases of older lines that got it;
    ``None`` for either word ``unknown`` or ``none`` (kept in ``fixed_in_text``)."""

    component: str
    fixed_in: Any = None  # harness.kubebins.Version | None
    fixed_in_text: str = "unknown"
    fixed_by: list[str] = field(default_factory=list)
    cherry_picks: list[Any] = field(default_factory=list)
    introduced_in: Any = None
    introduced_in_text: str = "unknown"
    last_buggy: Any = None
    last_buggy_text: str = "unknown"
    modes: list[str] = field(default_factory=list)
    note: str = ""

    def has_fix(self, release: str | Any) -> bool | None:
        """Whether ``release`` (``v1.MINOR.PATCH``) contains the fix: at or after
        ``fixed_in``, or at or after a cherry-pick in that cherry-pick's own line. ``None``
        when the history does not say (no fix release known)."""
        from harness.kubebins import Version

        r = Version.parse(str(release))
        if self.fixed_in is None:
            return None
        if r >= self.fixed_in:
            return True
        return any(c.minor == r.minor and r.patch >= c.patch for c in self.cherry_picks)

    def expected_to_fail(self, release: str | Any, mode: str | None = None) -> bool | None:
        """Whether kube-proxy ``release`` (in proxy ``mode``) is expected to fail the
        scenario: a kube-proxy bug of that mode, the release without the fix and not older
        than ``introduced_in``. ``None`` when that cannot be told (another component's bug,
        or no fix release known)."""
        from harness.kubebins import Version

        if self.component != "kube-proxy":
            return None
        if mode and self.modes and mode not in self.modes:
            return False
        fixed = self.has_fix(release)
        if fixed is None:
            return None
        if fixed:
            return False
        r = Version.parse(str(release))
        if self.introduced_in is not None and r < self.introduced_in:
            return False
        return True

    def status(self, release: str | Any, mode: str | None = None) -> str | None:
        """How kube-proxy ``release`` stands to the bug, in words for reports: "before the
        fix", "has the fix", "not affected (...)"; None when that cannot be told."""
        if self.component != "kube-proxy":
            return None
        if mode and self.modes and mode not in self.modes:
            return f"not affected ({'/'.join(self.modes)} mode only)"
        exp = self.expected_to_fail(release, mode)
        if exp is None:
            return None
        if exp:
            return "before the fix"
        if self.has_fix(release):
            return "has the fix"
        return f"not affected (introduced in {self.introduced_in_text})"

    def to_dict(self) -> dict[str, Any]:
        """The history as plain data (report records, ``user_properties``)."""
        d: dict[str, Any] = {"component": self.component, "fixed_in": self.fixed_in_text,
                             "fixed_by": list(self.fixed_by),
                             "cherry_picks": [str(c) for c in self.cherry_picks],
                             "introduced_in": self.introduced_in_text,
                             "last_buggy": self.last_buggy_text}
        if self.modes:
            d["modes"] = list(self.modes)
        if self.note:
            d["note"] = self.note
        return d


def history_from_dict(d: dict[str, Any]) -> History:
    """A History back from ``History.to_dict()`` (report records)."""
    from harness.kubebins import BuildError, Version

    def rel(text: Any) -> Any:
        try:
            return Version.parse(str(text))
        except BuildError:
            return None

    return History(component=d.get("component", "none"), fixed_in=rel(d.get("fixed_in")),
                   fixed_in_text=str(d.get("fixed_in", "unknown")),
                   fixed_by=list(d.get("fixed_by") or []),
                   cherry_picks=[v for v in map(rel, d.get("cherry_picks") or []) if v is not None],
                   introduced_in=rel(d.get("introduced_in")),
                   introduced_in_text=str(d.get("introduced_in", "unknown")),
                   last_buggy=rel(d.get("last_buggy")), last_buggy_text=str(d.get("last_buggy", "unknown")),
                   modes=list(d.get("modes") or []), note=str(d.get("note") or ""))


@dataclass
class Scenario:
    path: Path
    description: str
    references: list[str]
    objects: list[Any]  # lightkube objects applied first
    flows: list[Flow]
    steps: list[Step]
    proxier: ProxierSettings
    topology: Any  # harness.topology.spec.TopologySpec (pods included)
    caught_by_fault: str | None = None
    features: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    #: proxier name -> why that proxier is known to fail this scenario (a strict xfail)
    known_gaps: dict[str, str] = field(default_factory=dict)
    #: the one-sentence normative statement for reports (default: from the description)
    must: str = ""
    #: where the bug is in Kubernetes' releases (``history:``), if the file says
    history: History | None = None
    #: the file says ``topology.pod_network`` (else ``--pod-network`` applies)
    pod_network_pinned: bool = False
    #: processes listening in a node's own namespace (``topology.listeners``)
    listeners: list[Listener] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def summary(self) -> str:
        return self.description.strip().split("\n")[0].split(". ")[0].rstrip(".") + "."

    def all_steps(self) -> list[Step]:
        """The initial flows as a step, then the declared steps."""
        first = [Step("flows", self.lines.get("flows", 0), "flows", flows=self.flows)] if self.flows else []
        return first + self.steps

    def all_flows(self) -> list[Flow]:
        return [f for s in self.all_steps() for f in s.flows]


# ----------------------------------------------------------------------------- the reader


class _Reader:
    """Walks PyYAML nodes so that every error carries the line it is about."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def err(self, node: yaml.Node | None, problem: str, hint: str = "") -> ScenarioError:
        return ScenarioError(self.path, node.start_mark.line + 1 if node is not None else None,
                             problem, hint)

    def mapping(self, node: yaml.Node, what: str, allowed: dict[str, bool]) -> dict[str, yaml.Node]:
        """A mapping's children by key; unknown, duplicate and missing required keys fail.
        ``allowed`` maps each key to whether it is required."""
        if not isinstance(node, yaml.MappingNode):
            raise self.err(node, f"{what} must be a mapping, not {_kind(node)}")
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if key is None:
                raise self.err(k, f"{what}: keys must be plain strings")
            if key in out:
                raise self.err(k, f"{what}: duplicate key {key!r}", "write each key once")
            if key not in allowed:
                raise self.err(k, f"{what}: unknown key {key!r}",
                               f"known keys: {', '.join(sorted(allowed))}")
            out[key] = v
        missing = [k for k, req in allowed.items() if req and k not in out]
        if missing:
            raise self.err(node, f"{what}: missing {', '.join(repr(m) for m in missing)}")
        return out

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.err(node, f"{what} must be a scalar, not {_kind(node)}")
        return _construct(node)

    def string(self, node: yaml.Node, what: str) -> str:
        v = self.scalar(node, what)
        if not isinstance(v, str) or not v.strip():
            raise self.err(node, f"{what} must be a non-empty string, got {v!r}")
        return v

    def integer(self, node: yaml.Node, what: str, lo: int, hi: int) -> int:
        v = self.scalar(node, what)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.err(node, f"{what} must be an integer in {lo}..{hi}, got {v!r}")
        return v

    def number(self, node: yaml.Node, what: str) -> float:
        v = self.scalar(node, what)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise self.err(node, f"{what} must be a non-negative number of seconds, got {v!r}")
        return float(v)

    def boolean(self, node: yaml.Node, what: str) -> bool:
        v = self.scalar(node, what)
        if not isinstance(v, bool):
            raise self.err(node, f"{what} must be true or false, got {v!r}")
        return v

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.err(node, f"{what} must be a list, not {_kind(node)}")
        return list(node.value)

    def strings(self, node: yaml.Node, what: str) -> list[str]:
        return [self.string(n, f"{what}[{i}]") for i, n in enumerate(self.sequence(node, what))]

    def objects(self, node: yaml.Node, what: str) -> list[Any]:
        """Kubernetes objects: a file name (relative to the scenario) or inline objects."""
        from servicemodel.load import ModelError, load_objects, load_text

        try:
            if isinstance(node, yaml.ScalarNode):
                rel = self.string(node, what)
                p = (self.path.parent / rel)
                if not p.is_file():
                    raise self.err(node, f"{what}: no file {rel!r} next to the scenario",
                                   f"looked for {p}")
                return load_objects(p)
            out = []
            self.no_duplicate_keys(node, what)
            for i, item in enumerate(self.sequence(node, what)):
                # one object at a time, so an error points at that object's line
                try:
                    if isinstance(item, yaml.MappingNode) and any(
                            k.value == "generate" for k, _ in item.value):
                        docs = generate_slices(self, item, f"{what}[{i}]")
                        out += load_text(yaml.safe_dump_all(docs), source=str(self.path))
                        continue
                    out += load_text(yaml.safe_dump(_construct(item)), source=str(self.path))
                except ModelError as e:
                    raise ScenarioError(
                        self.path, item.start_mark.line + 1,
                        f"{what}[{i}]: {e.obj or 'object'}: "
                        + (f"field {e.field}: " if e.field else "") + e.problem,
                        e.hint or "") from None
            return out
        except ModelError as e:  # from a dump file: its own file and line are in the message
            raise ScenarioError(self.path, node.start_mark.line + 1, f"{what}: {e}") from None

    def no_duplicate_keys(self, node: yaml.Node, what: str) -> None:
        """YAML keeps the last of two equal keys silently; in a scenario that is an error."""
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else id(k)
                if key in seen:
                    raise self.err(k, f"{what}: duplicate key {key!r}", "write each key once")
                seen.add(key)
                self.no_duplicate_keys(v, what)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                self.no_duplicate_keys(v, what)


#: the EndpointSlice controller's default --max-endpoints-per-slice
DEFAULT_PER_SLICE = 100
GENERATE_KEYS = {"generate": True, "service": True, "namespace": False, "endpoints": True,
                 "ports": True, "per_slice": False, "pod_prefix": False}


def generate_slices(r: _Reader, node: yaml.Node, what: str) -> list[dict[str, Any]]:
    """``{generate: EndpointSlice, service, namespace, endpoints: [{node, count, first}],
    ports, per_slice, pod_prefix}``: the EndpointSlices the controller would write for
    ``count`` ready pods per node, addresses consecutive from ``first``, pods named
    ``PREFIX-0``, ``PREFIX-1``, ... (expect them with a pattern: ``PREFIX-*``), at most
    ``per_slice`` endpoints (default 100) per slice."""
    m = r.mapping(node, what, GENERATE_KEYS)
    if r.string(m["generate"], f"{what}.generate") != "EndpointSlice":
        raise r.err(m["generate"], f"{what}: only EndpointSlices are generated",
                    "write generate: EndpointSlice")
    svc = r.string(m["service"], f"{what}.service")
    ns = r.string(m["namespace"], f"{what}.namespace") if "namespace" in m else "default"
    prefix = r.string(m["pod_prefix"], f"{what}.pod_prefix") if "pod_prefix" in m else svc
    per = r.integer(m["per_slice"], f"{what}.per_slice", 1, 1000) if "per_slice" in m else DEFAULT_PER_SLICE
    ports = _construct(m["ports"])
    if not isinstance(ports, list) or not ports:
        raise r.err(m["ports"], f"{what}.ports must be a non-empty list of EndpointSlice ports")
    eps: list[dict[str, Any]] = []
    family = "IPv4"
    for j, en in enumerate(r.sequence(m["endpoints"], f"{what}.endpoints")):
        w = f"{what}.endpoints[{j}]"
        em = r.mapping(en, w, {"node": True, "count": True, "first": True})
        on = r.string(em["node"], f"{w}.node")
        count = r.integer(em["count"], f"{w}.count", 1, 5000)
        try:
            first = ipaddress.ip_address(r.string(em["first"], f"{w}.first"))
        except ValueError:
            raise r.err(em["first"], f"{w}.first is not an address") from None
        family = "IPv6" if first.version == 6 else "IPv4"
        for k in range(count):
            eps.append({"addresses": [str(first + k)], "nodeName": on,
                        "conditions": {"ready": True, "serving": True, "terminating": False},
                        "targetRef": {"kind": "Pod", "namespace": ns,
                                      "name": f"{prefix}-{len(eps)}"}})
    return [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": f"{svc}-gen{i // per}", "namespace": ns,
                          "labels": {"kubernetes.io/service-name": svc}},
             "addressType": family, "endpoints": eps[i:i + per], "ports": ports}
            for i in range(0, len(eps), per)]


def _kind(node: yaml.Node) -> str:
    return {yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}.get(type(node), "a scalar")


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _compose(path: Path, text: str) -> yaml.Node:
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ScenarioError(path, mark.line + 1 if mark else None,
                            f"invalid YAML: {getattr(e, 'problem', None) or e}") from None
    nodes = [n for n in nodes if n is not None]
    if len(nodes) != 1:
        raise ScenarioError(path, None, f"expected one YAML document, found {len(nodes)}",
                            "a scenario is one mapping; put Kubernetes objects under 'objects'")
    return nodes[0]


TOP_KEYS = {"description": True, "must": False, "references": False, "caught_by_fault": False,
            "features": False, "objects": True, "topology": False, "proxier": False,
            "flows": False, "steps": False, "known_gaps": False, "history": False}
HISTORY_KEYS = {"component": True, "fixed_in": True, "fixed_by": False, "cherry_picks": False,
                "introduced_in": False, "last_buggy": False, "modes": False, "note": False}
FLOW_KEYS = {"name": True, "from": True, "protocol": False, "to": True, "port": True,
             "expect": True, "masq": False, "count": False, "sport": False, "source": False,
             "distribution": False, "affinity": False, "interval": False, "reach": False,
             "endpoint_of": False, "connection": False, "inject": False, "requires": False,
             "known_gap": False}
TOPO_KEYS = {"pod_network": False, "hairpin_mode": False, "client_gateway": False,
             "nodes": False, "clients": False, "pods": False, "listeners": False}
PROXIER_KEYS = {"cluster_cidr": False, "masquerade_all": False, "nodeport_addresses": False,
                "localhost_nodeports": False, "capabilities": False}
STEP_ACTIONS = ("apply", "delete", "restart_proxier", "wait", "flows")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file. Raises ``ScenarioError``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(path, None, f"cannot read: {e.strerror or e}") from None
    return parse_scenario(text, path)


def parse_scenario(text: str, path: str | Path = "<scenario>") -> Scenario:
    path = Path(path)
    r = _Reader(path, text)
    root = _compose(path, text)
    top = r.mapping(root, "scenario", TOP_KEYS)
    lines = {k: v.start_mark.line + 1 for k, v in top.items()}

    description = r.string(top["description"], "description")
    refs = r.strings(top["references"], "references") if "references" in top else []
    for i, ref in enumerate(refs):
        if not ref.startswith(("https://", "http://")):
            raise r.err(top["references"].value[i], f"references[{i}] {ref!r} is not a URL")
    fault = r.string(top["caught_by_fault"], "caught_by_fault") if "caught_by_fault" in top else None
    features = r.strings(top["features"], "features") if "features" in top else []
    from harness.features import FEATURE_MARKERS

    for i, f in enumerate(features):
        if f not in FEATURE_MARKERS:
            raise r.err(top["features"].value[i], f"features[{i}]: unknown feature {f!r}",
                        f"known: {', '.join(sorted(FEATURE_MARKERS))}")

    gaps: dict[str, str] = {}
    for i, gn in enumerate(r.sequence(top["known_gaps"], "known_gaps") if "known_gaps" in top else []):
        gm = r.mapping(gn, f"known_gaps[{i}]", {"proxier": True, "reason": True})
        prox = r.string(gm["proxier"], "proxier")
        if prox in gaps:
            raise r.err(gm["proxier"], f"known_gaps[{i}]: proxier {prox!r} listed twice")
        gaps[prox] = r.string(gm["reason"], "reason")
    objects = r.objects(top["objects"], "objects")
    proxier = _proxier(r, top.get("proxier"))

    # steps first (their objects contribute pods), flows checked afterwards
    steps: list[Step] = []
    step_names: dict[str, int] = {}
    for i, sn in enumerate(r.sequence(top["steps"], "steps") if "steps" in top else []):
        steps.append(_step(r, sn, i, step_names))
    flows = _flows(r, top["flows"], "flows") if "flows" in top else []
    if not flows and not any(s.flows for s in steps):
        raise r.err(root, "the scenario checks nothing", "add 'flows' (or a 'flows' step)")

    all_objects = objects + [o for s in steps for o in s.objects]
    for o in all_objects:
        if type(o).__name__ == "EndpointSlice":
            for p in o.ports or ():
                if p.name is None:
                    raise r.err(top.get("objects") if o in objects else top.get("steps"),
                                f"EndpointSlice {o.metadata.namespace}/{o.metadata.name}: port "
                                f"{p.port} has no name",
                                'write name: "" for an unnamed port, as the EndpointSlice '
                                "controller does; real kube-proxy ignores ports with no name "
                                "(endpointslicecache: 'Ignoring port with nil name')")
    family = _objects_family(r, root, all_objects)
    if family == "IPv6" and "ipv6" not in proxier.capabilities:
        proxier.capabilities.append("ipv6")  # replayed on an IPv6 test network
    topo = _topology(r, top.get("topology"), all_objects, proxier, family)
    sc = Scenario(path, description, refs, objects, flows, steps, proxier, topo, fault,
                  features, lines, gaps)
    sc.listeners = _listeners(r, top.get("topology"), topo)
    _check_references(r, sc, all_objects)
    _check_relations(r, sc)
    topo_node = top.get("topology")
    sc.pod_network_pinned = isinstance(topo_node, yaml.MappingNode) and any(
        k.value == "pod_network" for k, _ in topo_node.value)
    if "must" in top:
        sc.must = r.string(top["must"], "must")
    if "history" in top:
        sc.history = _history(r, top["history"])
    return sc


def _release(r: _Reader, node: yaml.Node, what: str, words: tuple[str, ...]) -> tuple[Any, str]:
    """A release (``v1.MINOR.PATCH``) or one of ``words``: (Version or None, the text)."""
    from harness.kubebins import BuildError, Version

    text = str(r.scalar(node, what)).strip()
    if text in words:
        return None, text
    try:
        return Version.parse(text), text
    except BuildError:
        raise r.err(node, f"{what} {text!r} is not a release",
                    f"write v1.MINOR.PATCH or one of: {', '.join(words)}") from None


def _history(r: _Reader, node: yaml.Node) -> History:
    m = r.mapping(node, "history", HISTORY_KEYS)
    comp = r.string(m["component"], "history.component")
    if comp not in HISTORY_COMPONENTS:
        raise r.err(m["component"], f"history.component {comp!r} is unknown",
                    f"one of {', '.join(HISTORY_COMPONENTS)} (none: not a bug, or a configuration issue)")
    h = History(comp)
    h.fixed_in, h.fixed_in_text = _release(r, m["fixed_in"], "history.fixed_in", ("unknown", "none"))
    if "fixed_by" in m:
        h.fixed_by = r.strings(m["fixed_by"], "history.fixed_by")
        for i, u in enumerate(h.fixed_by):
            if not u.startswith("https://"):
                raise r.err(m["fixed_by"].value[i], f"history.fixed_by[{i}] {u!r} is not a URL",
                            "link the pull request")
    if "cherry_picks" in m:
        for i, cn in enumerate(r.sequence(m["cherry_picks"], "history.cherry_picks")):
            v, _ = _release(r, cn, f"history.cherry_picks[{i}]", ())
            if h.fixed_in is not None and v >= h.fixed_in:
                raise r.err(cn, f"history.cherry_picks[{i}] {v} is not older than fixed_in "
                            f"{h.fixed_in}", "a cherry-pick brings the fix to an older line")
            h.cherry_picks.append(v)
    if "introduced_in" in m:
        h.introduced_in, h.introduced_in_text = _release(
            r, m["introduced_in"], "history.introduced_in", ("unknown",))
    if "last_buggy" in m:
        h.last_buggy, h.last_buggy_text = _release(
            r, m["last_buggy"], "history.last_buggy", ("unknown", "none"))
    if "modes" in m:
        h.modes = r.strings(m["modes"], "history.modes")
        for i, md in enumerate(h.modes):
            if md not in PROXY_MODES:
                raise r.err(m["modes"].value[i], f"history.modes[{i}] {md!r} is unknown",
                            f"one of {', '.join(PROXY_MODES)}")
    if "note" in m:
        h.note = " ".join(r.string(m["note"], "history.note").split())
    if h.last_buggy is not None and h.has_fix(h.last_buggy):
        raise r.err(m["last_buggy"], f"history.last_buggy {h.last_buggy} already has the fix "
                    f"(fixed_in {h.fixed_in_text}, cherry_picks "
                    f"{', '.join(map(str, h.cherry_picks)) or 'none'})")
    if h.introduced_in is not None and h.last_buggy is not None and h.last_buggy < h.introduced_in:
        raise r.err(m["last_buggy"], f"history.last_buggy {h.last_buggy} is older than "
                    f"introduced_in {h.introduced_in}")
    return h


def _proxier(r: _Reader, node: yaml.Node | None) -> ProxierSettings:
    ps = ProxierSettings()
    if node is None:
        return ps
    m = r.mapping(node, "proxier", PROXIER_KEYS)
    if "cluster_cidr" in m:
        v = r.scalar(m["cluster_cidr"], "proxier.cluster_cidr")
        if v not in ("", None):
            try:
                ipaddress.ip_network(str(v))
            except ValueError:
                raise r.err(m["cluster_cidr"], f"proxier.cluster_cidr {v!r} is not a CIDR",
                            'write e.g. 10.244.0.0/16, or "" for none') from None
        ps.cluster_cidr = "" if v is None else str(v)
    if "masquerade_all" in m:
        ps.masquerade_all = r.boolean(m["masquerade_all"], "proxier.masquerade_all")
    if "nodeport_addresses" in m:
        ps.nodeport_addresses = r.strings(m["nodeport_addresses"], "proxier.nodeport_addresses")
        for i, c in enumerate(ps.nodeport_addresses):
            if c != "primary":
                try:
                    ipaddress.ip_network(c)
                except ValueError:
                    raise r.err(m["nodeport_addresses"].value[i],
                                f"proxier.nodeport_addresses[{i}] {c!r} is not a CIDR") from None
    if "localhost_nodeports" in m:
        ps.localhost_nodeports = r.boolean(m["localhost_nodeports"], "proxier.localhost_nodeports")
    if "capabilities" in m:
        from harness.proxiers import CAPABILITIES

        ps.capabilities = r.strings(m["capabilities"], "proxier.capabilities")
        for i, c in enumerate(ps.capabilities):
            if c not in CAPABILITIES:
                raise r.err(m["capabilities"].value[i], f"unknown capability {c!r}",
                            f"known: {', '.join(sorted(CAPABILITIES))}")
    return ps


def _step(r: _Reader, node: yaml.Node, i: int, names: dict[str, int]) -> Step:
    what = f"steps[{i}]"
    m = r.mapping(node, what, {"name": False, "traffic": False, **{a: False for a in STEP_ACTIONS}})
    actions = [a for a in STEP_ACTIONS if a in m]
    if len(actions) != 1:
        raise r.err(node, f"{what} must have exactly one action, has {actions or 'none'}",
                    f"one of {', '.join(STEP_ACTIONS)}")
    kind = actions[0]
    line = node.start_mark.line + 1
    name = r.string(m["name"], f"{what}.name") if "name" in m else f"{kind} (line {line})"
    if name in names:
        raise r.err(m.get("name", node), f"{what}: duplicate step name {name!r}",
                    f"also used on line {names[name]}")
    names[name] = line
    st = Step(kind, line, name)
    v = m[kind]
    if kind == "apply":
        st.objects = r.objects(v, f"{what}.apply")
    elif kind == "delete":
        for j, d in enumerate(r.sequence(v, f"{what}.delete")):
            dm = r.mapping(d, f"{what}.delete[{j}]", {"kind": True, "namespace": False, "name": True})
            k = r.string(dm["kind"], "kind")
            if k not in ("Service", "EndpointSlice", "Node"):
                raise r.err(dm["kind"], f"{what}.delete[{j}]: kind {k!r} is not one a proxier reads")
            ns = r.string(dm["namespace"], "namespace") if "namespace" in dm else ""
            if k != "Node" and not ns:
                raise r.err(d, f"{what}.delete[{j}]: {k} needs a namespace")
            st.deletes.append((k, ns, r.string(dm["name"], "name")))
    elif kind == "restart_proxier":
        st.node = r.string(v, f"{what}.restart_proxier")
        st.line = v.start_mark.line + 1
    elif kind == "wait":
        st.seconds = r.number(v, f"{what}.wait")
    else:
        st.flows = _flows(r, v, f"{what}.flows")
    if "traffic" in m:
        if kind not in ("restart_proxier", "apply"):
            raise r.err(m["traffic"], f"{what}: traffic goes with apply or restart_proxier",
                        "it is what flows while the proxier takes in a change or restarts")
        st.traffic = _traffic(r, m["traffic"], f"{what}.traffic")
    return st


TRAFFIC_KEYS = {"from": True, "to": True, "port": True, "protocol": False, "sport": True,
                "after": False, "every": False}


def _traffic(r: _Reader, node: yaml.Node, what: str) -> Traffic:
    """``traffic: {from, to, port, protocol: UDP, sport, after, every}`` on a
    ``restart_proxier`` step (kubernetes#126468: datagrams during the first sync)."""
    m = r.mapping(node, what, TRAFFIC_KEYS)
    proto = r.string(m["protocol"], f"{what}.protocol").upper() if "protocol" in m else "UDP"
    if proto != "UDP":
        raise r.err(m["protocol"], f"{what}: protocol {proto!r}",
                    "traffic is a stream of UDP datagrams from one source port")
    after = r.number(m["after"], f"{what}.after") if "after" in m else 2.0
    every = r.number(m["every"], f"{what}.every") if "every" in m else 0.05
    if not 0.01 <= every <= 1.0:
        raise r.err(m["every"], f"{what}.every {every} is outside 0.01..1 seconds")
    if after > 30:
        raise r.err(m["after"], f"{what}.after {after} s is longer than a UDP conntrack "
                    "entry lives unanswered (30 s)", "keep it at a few seconds")
    return Traffic(str(r.scalar(m["from"], f"{what}.from")), str(r.scalar(m["to"], f"{what}.to")),
                   r.integer(m["port"], f"{what}.port", 1, 65535),
                   r.integer(m["sport"], f"{what}.sport", 1024, 65535), after, every,
                   node.start_mark.line + 1)


def _flows(r: _Reader, node: yaml.Node, what: str) -> list[Flow]:
    out = []
    for i, fn in enumerate(r.sequence(node, what)):
        w = f"{what}[{i}]"
        m = r.mapping(fn, f"flow {w}", FLOW_KEYS)
        name = r.string(m["name"], f"{w}.name")
        proto = r.string(m["protocol"], f"{w}.protocol").upper() if "protocol" in m else "TCP"
        if proto not in PROTOCOLS:
            raise r.err(m["protocol"], f"flow {name!r}: protocol {proto!r} unknown",
                        f"one of {', '.join(PROTOCOLS)}")
        exp, untouched = _expect(r, m["expect"], name, w, proto)
        f = Flow(name=name, src=str(r.scalar(m["from"], f"{w}.from")), protocol=proto,
                 to=str(r.scalar(m["to"], f"{w}.to")),
                 port=r.integer(m["port"], f"{w}.port", 1, 65535), expect=exp,
                 line=fn.start_mark.line + 1, untouched=untouched)
        if exp == "http":
            f.http = int(untouched or 0)
            f.untouched = None
        if "masq" in m:
            f.masq = r.boolean(m["masq"], f"{w}.masq")
            if isinstance(exp, str):
                raise r.err(m["masq"], f"flow {name!r}: masq needs endpoints that answer",
                            f"drop 'masq' for expect: {exp}")
        if "count" in m:
            f.count = r.integer(m["count"], f"{w}.count", 1, 20000)
        if "sport" in m:
            f.sport = r.integer(m["sport"], f"{w}.sport", 1024, 65535)
        if "source" in m:
            f.source = r.string(m["source"], f"{w}.source")
        if "distribution" in m:
            f.distribution = r.string(m["distribution"], f"{w}.distribution")
            if f.distribution != "uniform":
                raise r.err(m["distribution"], f"flow {name!r}: distribution {f.distribution!r}",
                            "only 'uniform' is known")
        if "affinity" in m:
            f.affinity = r.boolean(m["affinity"], f"{w}.affinity")
        if "interval" in m:
            f.interval = r.number(m["interval"], f"{w}.interval")
            if not f.affinity:
                raise r.err(m["interval"], f"flow {name!r}: interval is for affinity flows",
                            "add 'affinity: true' or drop 'interval'")
        if (f.distribution or f.affinity) and (isinstance(exp, str) or (
                len(exp) < 2 and not any(map(_is_pattern, exp)))):
            raise r.err(fn, f"flow {name!r}: statistical checks need at least 2 expected endpoints")
        if f.distribution and f.affinity:
            raise r.err(fn, f"flow {name!r}: distribution and affinity exclude each other")
        if f.sport and (f.distribution or f.affinity):
            raise r.err(m["sport"], f"flow {name!r}: a fixed sport is one connection; "
                        "statistical checks need many")
        if "reach" in m:
            f.reach = _reach(r, m["reach"], f, w)
        _scoping(r, m, f, w)
        _relations(r, m, f, w)
        f._node = fn  # type: ignore[attr-defined]
        out.append(f)
    return out


# ------------------------------------------------------------- a flow's expect (issue 16)

#: what must happen to a packet the proxier leaves untouched (``expect: {untouched: ...}``)
UNTOUCHED = ("reject", "reset", "drop", "any")


def _expect(r: _Reader, node: yaml.Node, name: str, w: str,
            proto: str) -> tuple[list[str] | str, str | None]:
    """``expect``: a list of endpoints, ``reject``, ``drop``, or ``{untouched: X}`` with X
    what the destination itself does with the untranslated packet (``any``: anything but
    an endpoint's answer, chosen on purpose). Returns (expect, untouched)."""
    if isinstance(node, yaml.MappingNode):
        keys = {k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
        if "http" in keys:
            hm = r.mapping(node, f"flow {name!r}: expect", {"http": True})
            status = r.integer(hm["http"], f"{w}.expect.http", 100, 599)
            if proto != "TCP":
                raise r.err(hm["http"], f"flow {name!r}: HTTP needs TCP", "drop 'protocol'")
            return "http", str(status)
        um = r.mapping(node, f"flow {name!r}: expect", {"untouched": True})
        how = r.string(um["untouched"], f"{w}.expect.untouched")
        if how not in UNTOUCHED:
            raise r.err(um["untouched"], f"flow {name!r}: untouched {how!r} is not an outcome",
                        f"one of {', '.join(UNTOUCHED)}")
        if how == "reset" and proto != "TCP":
            raise r.err(um["untouched"], f"flow {name!r}: only TCP answers with a reset",
                        f"a closed {proto} port answers 'reject' (ICMP port unreachable)")
        return "untouched", how
    if isinstance(node, yaml.ScalarNode):
        exp = r.string(node, f"{w}.expect")
        if exp == "untouched":
            raise r.err(node, f"flow {name!r}: 'expect: untouched' does not say what must "
                        "happen to the untranslated packet",
                        "write expect: {untouched: reject}, {untouched: reset}, "
                        "{untouched: drop}, or {untouched: any} if anything but an endpoint's "
                        "answer will do")
        if exp not in OUTCOMES:
            raise r.err(node, f"flow {name!r}: expect {exp!r} is not an outcome",
                        f"write {', '.join(OUTCOMES)}, or a list of endpoints (ip:port or pod names)")
        return exp, None
    exps = r.strings(node, f"{w}.expect")
    if not exps:
        raise r.err(node, f"flow {name!r}: expect is an empty list",
                    "write 'reject' or 'drop' for flows no endpoint may answer")
    return exps, None


#: how a flow's endpoints relate to an earlier flow's, per source address (``endpoint_of``)
RELATIONS = ("same", "different", "independent")
#: crafted packets a connection flow can send into its connections first (``inject``)
INJECTIONS = ("out-of-window",)


def _scoping(r: _Reader, m: dict[str, yaml.Node], f: Flow, w: str) -> None:
    """``requires: [capability]`` and ``known_gap: [{proxier, reason}]`` on one flow."""
    if "requires" in m:
        from harness.proxiers import CAPABILITIES

        f.requires = r.strings(m["requires"], f"{w}.requires")
        for i, c in enumerate(f.requires):
            if c not in CAPABILITIES:
                raise r.err(m["requires"].value[i], f"flow {f.name!r}: unknown capability {c!r}",
                            f"known: {', '.join(sorted(CAPABILITIES))}")
    if "known_gap" in m:
        for i, gn in enumerate(r.sequence(m["known_gap"], f"{w}.known_gap")):
            gm = r.mapping(gn, f"{w}.known_gap[{i}]", {"proxier": True, "reason": True})
            prox = r.string(gm["proxier"], "proxier")
            reason = r.string(gm["reason"], "reason")
            if prox in f.known_gaps:
                raise r.err(gm["proxier"], f"flow {f.name!r}: known_gap proxier {prox!r} twice")
            if "http" not in reason:
                raise r.err(gm["reason"], f"flow {f.name!r}: a known gap's reason must link the "
                            "issue or the difference", "add the URL to 'reason'")
            f.known_gaps[prox] = reason


def _relations(r: _Reader, m: dict[str, yaml.Node], f: Flow, w: str) -> None:
    """``endpoint_of``, ``connection`` and ``inject`` (checked against other flows later,
    in ``_check_relations``)."""
    if f.http is not None and f.sport:
        raise r.err(m["sport"], f"flow {f.name!r}: an HTTP probe has its own source port",
                    "drop 'sport'")
    if "endpoint_of" in m:
        em = r.mapping(m["endpoint_of"], f"{w}.endpoint_of", {"flow": True, "is": True})
        rel = r.string(em["is"], f"{w}.endpoint_of.is")
        if rel not in RELATIONS:
            raise r.err(em["is"], f"flow {f.name!r}: endpoint_of.is {rel!r}",
                        f"one of {', '.join(RELATIONS)}")
        if not isinstance(f.expect, list):
            raise r.err(m["endpoint_of"], f"flow {f.name!r}: endpoint_of needs a list of endpoints")
        if rel == "independent" and len(f.expect) < 2:
            raise r.err(em["is"], f"flow {f.name!r}: independent needs at least 2 endpoints")
        f.endpoint_of = (r.string(em["flow"], f"{w}.endpoint_of.flow"), rel)
    if "connection" in m:
        f.connection = r.string(m["connection"], f"{w}.connection")
        why = ("connections are TCP" if f.protocol != "TCP"
               else "it needs a list of endpoints" if not isinstance(f.expect, list)
               else "a kept connection has its own source port" if f.sport
               else "statistical checks need new connections" if f.distribution or f.affinity
               else "reach: all needs new connections" if f.reach else "")
        if why:
            raise r.err(m["connection"], f"flow {f.name!r}: connection does not go with this "
                        f"flow: {why}")
    if "inject" in m:
        f.inject = r.string(m["inject"], f"{w}.inject")
        if f.inject not in INJECTIONS:
            raise r.err(m["inject"], f"flow {f.name!r}: inject {f.inject!r}",
                        f"one of {', '.join(INJECTIONS)}")
        if not f.connection:
            raise r.err(m["inject"], f"flow {f.name!r}: inject needs a connection to inject into",
                        "add 'connection: NAME'")


def _check_relations(r: _Reader, sc: Scenario) -> None:
    """``endpoint_of`` names an earlier flow with endpoints; the flows of one ``connection``
    go from the same host to the same place, and only the first says ``count``."""
    seen: dict[str, Flow] = {}
    opened: dict[str, Flow] = {}
    for f in sc.all_flows():
        fm = {k.value: v for k, v in f._node.value} if hasattr(f, "_node") else {}  # type: ignore[attr-defined]
        if f.endpoint_of:
            other = seen.get(f.endpoint_of[0])
            if other is None:
                raise r.err(fm.get("endpoint_of"), f"flow {f.name!r}: endpoint_of flow "
                            f"{f.endpoint_of[0]!r} is no earlier flow",
                            f"earlier flows: {', '.join(seen) or 'none'}")
            if not isinstance(other.expect, list):
                raise r.err(fm.get("endpoint_of"), f"flow {f.name!r}: flow {other.name!r} "
                            "reaches no endpoints to compare with")
        if f.connection:
            first = opened.get(f.connection)
            if first is None:
                opened[f.connection] = f
                f.opens = True
            else:
                diff = [k for k, a, b in (("from", f.src, first.src), ("to", f.to, first.to),
                                          ("port", f.port, first.port),
                                          ("source", f.source, first.source)) if a != b]
                if diff:
                    raise r.err(fm.get("connection"), f"flow {f.name!r}: connection "
                                f"{f.connection!r} was opened by flow {first.name!r} with other "
                                f"{', '.join(diff)}", "a kept connection keeps its addresses")
                if "count" in fm:
                    raise r.err(fm["count"], f"flow {f.name!r}: the connections were opened by "
                                f"flow {first.name!r}", "give 'count' there only")
                f.count = first.count
        seen[f.name] = f


def _reach(r: _Reader, node: yaml.Node, f: Flow, w: str) -> str:
    """``reach: all``: each expected endpoint answers at least once (harness.flowcheck)."""
    v = r.string(node, f"{w}.reach")
    if v != "all":
        raise r.err(node, f"flow {f.name!r}: reach {v!r}", "only 'all' is known")
    why = ("it needs a list of endpoints" if not isinstance(f.expect, list)
           else "a fixed sport is one connection, so one endpoint" if f.sport
           else "with affinity each client reaches one endpoint" if f.affinity
           else "the distribution check already fails on an endpoint never seen"
           if f.distribution else "")
    if why:
        raise r.err(node, f"flow {f.name!r}: reach: all does not go with this flow: {why}",
                    "drop 'reach'")
    return v


def _objects_family(r: _Reader, root: yaml.Node, objects: list[Any]) -> str:
    """The IP family of the dump: "IPv6" when every ClusterIP and EndpointSlice is IPv6
    (the test network is then built on the IPv6 addressing plan), else "IPv4"."""
    families = set()
    for o in objects:
        kind = type(o).__name__
        if kind == "EndpointSlice" and o.addressType in ("IPv4", "IPv6"):
            families.add(o.addressType)
        elif kind == "Service" and o.spec is not None:
            for ip in o.spec.clusterIPs or ([o.spec.clusterIP] if o.spec.clusterIP else []):
                if ip and ip != "None":
                    families.add("IPv6" if ":" in ip else "IPv4")
    if families == {"IPv4", "IPv6"}:
        raise r.err(root, "the objects mix IPv4 and IPv6 (dual-stack Services or slices of "
                    "both address types); scenarios replay one family",
                    "keep one family's clusterIPs and EndpointSlices (for dual-stack behaviour "
                    "see conformance/test_dual_stack.py)")
    return "IPv6" if families == {"IPv6"} else "IPv4"


def _topology(r: _Reader, node: yaml.Node | None, objects: list[Any], proxier: ProxierSettings,
              family: str = "IPv4") -> Any:
    kw: dict[str, Any] = dict(IPV6_PLAN) if family == "IPv6" else {}
    clients = (ClientSpec("client", extra_addresses=0),)
    extra_nodes: list[dict[str, Any]] = []
    extra_pods: list[tuple[str, str, str | None, yaml.Node]] = []
    extras: dict[str, tuple[tuple[str, ...], yaml.Node]] = {}  # node -> further addresses
    m: dict[str, yaml.Node] = {}
    if node is not None:
        m = r.mapping(node, "topology", TOPO_KEYS)
        if "pod_network" in m:
            kw["pod_network"] = r.string(m["pod_network"], "topology.pod_network")
            if kw["pod_network"] not in ("routed", "bridge"):
                raise r.err(m["pod_network"], f"topology.pod_network {kw['pod_network']!r}",
                            "use 'routed' or 'bridge'")
        if "hairpin_mode" in m:
            kw["hairpin_mode"] = r.boolean(m["hairpin_mode"], "topology.hairpin_mode")
        if "client_gateway" in m:
            kw["client_gateway"] = r.string(m["client_gateway"], "topology.client_gateway")
        if "nodes" in m:
            for i, nn in enumerate(r.sequence(m["nodes"], "topology.nodes")):
                nm = r.mapping(nn, f"topology.nodes[{i}]", {"name": True, "ip": False, "pod_cidr": False,
                                                            "extra_addresses": False})
                if "extra_addresses" in nm:
                    extras[r.string(nm["name"], "name")] = (_extra_addresses(
                        r, nm["extra_addresses"], f"topology.nodes[{i}].extra_addresses"), nn)
                d: dict[str, Any] = {"metadata": {"name": r.string(nm["name"], "name")}, "spec": {},
                                     "status": {}}
                if "ip" in nm:
                    d["status"]["addresses"] = [{"type": "InternalIP", "address": r.string(nm["ip"], "ip")}]
                if "pod_cidr" in nm:
                    d["spec"]["podCIDR"] = r.string(nm["pod_cidr"], "pod_cidr")
                extra_nodes.append(d)
        if "clients" in m:
            cl = []
            for i, cn in enumerate(r.sequence(m["clients"], "topology.clients")):
                cm = r.mapping(cn, f"topology.clients[{i}]", {"name": True, "ip": False, "extra_addresses": False})
                cl.append(ClientSpec(r.string(cm["name"], "name"),
                                     r.integer(cm["extra_addresses"], "extra_addresses", 0, 50)
                                     if "extra_addresses" in cm else 0,
                                     r.string(cm["ip"], "ip") if "ip" in cm else None))
            if not cl:
                raise r.err(m["clients"], "topology.clients is empty", "give at least one client")
            clients = tuple(cl)
        if "pods" in m:
            for i, pn in enumerate(r.sequence(m["pods"], "topology.pods")):
                pm = r.mapping(pn, f"topology.pods[{i}]", {"name": True, "node": True, "ip": False})
                extra_pods.append((r.string(pm["name"], "name"), r.string(pm["node"], "node"),
                                   r.string(pm["ip"], "ip") if "ip" in pm else None, pn))
    slices = [o for o in objects if type(o).__name__ == "EndpointSlice"]
    node_objs = [o.to_dict() for o in objects if type(o).__name__ == "Node"]
    known = {n["metadata"]["name"] for n in node_objs}
    nodes = node_objs + [n for n in extra_nodes if n["metadata"]["name"] not in known]
    known |= {n["metadata"]["name"] for n in extra_nodes}
    for s in slices:
        for ep in s.endpoints or ():
            if ep.nodeName and ep.nodeName not in known:
                nodes.append({"metadata": {"name": ep.nodeName}})
                known.add(ep.nodeName)
    for _, pnode, _, pn in extra_pods:
        if pnode not in known:
            raise r.err(pn, f"topology pod on node {pnode!r}, which is not a node",
                        f"nodes: {', '.join(sorted(known))}")
    if proxier.cluster_cidr:
        kw["cluster_cidr"] = proxier.cluster_cidr
    try:
        spec, pods = topology_from_objects(slices, nodes, clients=clients, **kw)
        if extras:
            spec = _with_extras(r, spec, extras)
        if extra_pods:
            from dataclasses import replace

            from harness.topology.spec import PodSpec

            more = tuple(PodSpec(name, pnode, ((8080, "tcp"), (8080, "udp")), ip)
                         for name, pnode, ip, _ in extra_pods)
            spec = replace(spec, pods=tuple(spec.pods) + more)
            validate(spec)
    except TopologyError as e:
        raise r.err(node if node is not None else None,
                    f"the objects and topology do not make a test network: {e}",
                    f"node addresses must be in the lan {kw.get('lan_cidr', '192.0.2.0/24')} "
                    "and pod addresses in their node's pod CIDR (of "
                    f"{kw.get('cluster_cidr', '10.244.0.0/16')}); rewrite the dump's "
                    "addresses") from None
    return spec


def _extra_addresses(r: _Reader, node: yaml.Node, what: str) -> tuple[str, ...]:
    """``topology.nodes[].extra_addresses``: a list of addresses (a node's second address,
    an externalIP or LB IP assigned to the node)."""
    if isinstance(node, yaml.ScalarNode):
        raise r.err(node, f"{what} must be a list of addresses, not {r.scalar(node, what)!r}",
                    "a node's further addresses are written out, e.g. [192.0.2.200] "
                    "(clients take a count of extra addresses, nodes their addresses)")
    out = r.strings(node, what)
    for i, a in enumerate(out):
        try:
            ipaddress.ip_address(a)
        except ValueError:
            raise r.err(node.value[i], f"{what}[{i}] {a!r} is not an address") from None
    if not out:
        raise r.err(node, f"{what} is empty", "drop the key or give an address")
    return tuple(out)


def _with_extras(r: _Reader, spec: Any, extras: dict[str, tuple[tuple[str, ...], yaml.Node]]) -> Any:
    """The topology with the nodes' further addresses; validated (a clash or an address
    outside the test network's ranges is an error naming the line)."""
    from dataclasses import replace

    names = {n.name for n in spec.nodes}
    for name, (_, nn) in extras.items():
        if name not in names:
            raise r.err(nn, f"topology node {name!r} with extra_addresses is not a node",
                        f"nodes: {', '.join(sorted(names))}")
    spec = replace(spec, nodes=[replace(n, extra_addresses=extras[n.name][0])
                                if n.name in extras else n for n in spec.nodes])
    try:
        validate(spec)
    except TopologyError as e:
        bad = next((nn for name, (_, nn) in extras.items() if f"node {name!r}" in str(e)), None)
        raise r.err(bad, f"extra_addresses: {e}") from None
    return spec


def _listeners(r: _Reader, node: yaml.Node | None, spec: Any) -> list[Listener]:
    """``topology.listeners``: ``[{name, node, port, protocol}]``, a process in a node's
    namespace (kubernetes#97360: a host process on a port the proxier also handles)."""
    if not isinstance(node, yaml.MappingNode):
        return []
    ln = {k.value: v for k, v in node.value}.get("listeners")
    if ln is None:
        return []
    nodes = set(validate(spec).nodes)
    taken = {p.name for p in spec.pods} | nodes
    out: list[Listener] = []
    for i, item in enumerate(r.sequence(ln, "topology.listeners")):
        w = f"topology.listeners[{i}]"
        m = r.mapping(item, w, {"name": True, "node": True, "port": True, "protocol": False})
        name, on = r.string(m["name"], f"{w}.name"), r.string(m["node"], f"{w}.node")
        if on not in nodes:
            raise r.err(m["node"], f"{w}: {on!r} is not a node", f"nodes: {', '.join(sorted(nodes))}")
        if name in taken:
            raise r.err(m["name"], f"{w}: name {name!r} is already a pod, node or listener")
        taken.add(name)
        proto = r.string(m["protocol"], f"{w}.protocol").upper() if "protocol" in m else "TCP"
        if proto not in ("TCP", "UDP"):
            raise r.err(m["protocol"], f"{w}: protocol {proto!r}", "TCP or UDP")
        out.append(Listener(name, on, r.integer(m["port"], f"{w}.port", 1, 65535), proto))
    return out


def _check_references(r: _Reader, sc: Scenario, objects: list[Any]) -> None:
    spec = sc.topology
    res = validate(spec)
    hosts: dict[str, str] = {}
    for n in res.nodes:
        hosts[n] = "node"
    for c in res.clients:
        hosts[c] = "client"
    for p in spec.pods:
        hosts[p.name] = "pod"
    addresses: dict[str, str] = {}
    for n, rn in res.nodes.items():
        addresses[str(rn.lan_ip)] = n
        for a in rn.extra:
            addresses[str(a)] = n
    for c, (ip, extras) in res.clients.items():
        for a in (ip, *extras):
            addresses[str(a)] = c
    pods_by_ip = {p.ip: p.name for p in spec.pods if p.ip}
    addresses.update(pods_by_ip)
    endpoints: set[str] = set()
    for o in objects:
        if type(o).__name__ != "EndpointSlice":
            continue
        for ep in o.endpoints or ():
            for a in ep.addresses or ():
                for p in o.ports or ():
                    endpoints.add(f"{a}:{p.port}")
    slice_pods = {pods_by_ip[e.rsplit(':', 1)[0]] for e in endpoints if e.rsplit(':', 1)[0] in pods_by_ip}
    names: dict[str, int] = {}
    listener_names = {x.name for x in sc.listeners}
    for f in sc.all_flows():
        fn = getattr(f, "_node", None)
        if isinstance(f.expect, list) and any(_is_pattern(e) for e in f.expect):
            f.expect = _expand(r, f, fn, sorted(slice_pods | listener_names, key=_natural))
        if f.name in names:
            raise r.err(fn, f"duplicate flow name {f.name!r}", f"also used on line {names[f.name]}")
        names[f.name] = f.line
        fm = {k.value: v for k, v in fn.value} if fn is not None else {}
        if f.src not in hosts and f.src not in addresses:
            raise r.err(fm.get("from"), f"flow {f.name!r}: from {f.src!r} is no host or host address",
                        f"hosts: {', '.join(sorted(hosts))}")
        if f.source is not None:
            owner = f.src if f.src in hosts else addresses.get(f.src)
            if addresses.get(f.source) != owner:
                raise r.err(fm.get("source"), f"flow {f.name!r}: source {f.source} is not an "
                            f"address of {owner}")
        if f.to in hosts:
            if hosts[f.to] != "node":
                raise r.err(fm.get("to"), f"flow {f.name!r}: to {f.to!r} is a {hosts[f.to]}",
                            "write an address, or a node name for its lan address")
        else:
            try:
                ipaddress.ip_address(f.to)
            except ValueError:
                raise r.err(fm.get("to"), f"flow {f.name!r}: to {f.to!r} is neither an address "
                            "nor a node", f"nodes: {', '.join(sorted(res.nodes))}") from None
        if isinstance(f.expect, list):
            for j, e in enumerate(f.expect):
                written = getattr(f, "written_expect", f.expect)
                en = (fm["expect"].value[j] if "expect" in fm and written is f.expect
                      else fm.get("expect"))
                if ":" in e:
                    if e not in endpoints:
                        raise r.err(en, f"flow {f.name!r}: endpoint {e} is in no EndpointSlice",
                                    f"endpoints: {', '.join(sorted(endpoints)) or 'none'}")
                elif e not in slice_pods and e not in listener_names:
                    raise r.err(en, f"flow {f.name!r}: {e!r} is no endpoint pod or listener",
                                f"endpoint pods: {', '.join(sorted(slice_pods)) or 'none'}")
    for s in sc.steps:
        t = s.traffic
        if t is not None and t.src not in hosts:
            raise ScenarioError(sc.path, t.line, f"traffic from {t.src!r} is no host",
                                f"hosts: {', '.join(sorted(hosts))}")
        if t is not None and t.to not in res.nodes:
            try:
                ipaddress.ip_address(t.to)
            except ValueError:
                raise ScenarioError(sc.path, t.line, f"traffic to {t.to!r} is neither an "
                                    "address nor a node") from None
        if s.kind == "restart_proxier" and s.node != "all" and s.node not in res.nodes:
            raise ScenarioError(sc.path, s.line, f"restart_proxier: {s.node!r} is not a node",
                                f"nodes: {', '.join(sorted(res.nodes))}, or 'all'")


def _is_pattern(e: str) -> bool:
    return any(c in e for c in "*?[")


def _natural(name: str) -> tuple[Any, ...]:
    """big-2 before big-10."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _expand(r: _Reader, f: Flow, fn: Any, pods: list[str]) -> list[str]:
    """``expect`` entries written as patterns (``big-*``: fnmatch over endpoint pod and
    listener names), expanded; a pattern that matches nothing is an error."""
    import fnmatch

    fm = {k.value: v for k, v in fn.value} if fn is not None else {}
    out: list[str] = []
    for j, e in enumerate(f.expect):
        if not _is_pattern(e):
            out.append(e)
            continue
        hit = [p for p in pods if fnmatch.fnmatchcase(p, e)]
        if not hit:
            raise r.err(fm["expect"].value[j] if "expect" in fm else fn,
                        f"flow {f.name!r}: pattern {e!r} matches no endpoint pod",
                        f"endpoint pods: {', '.join(pods[:10])}{' ...' if len(pods) > 10 else ''}")
        out += [p for p in hit if p not in out]
    if (f.distribution or f.affinity or f.endpoint_of) and len(out) < 2:
        raise r.err(fn, f"flow {f.name!r}: statistical checks need at least 2 expected "
                    f"endpoints; {f.expect} matches {out}")
    f.written_expect = list(f.expect)  # type: ignore[attr-defined]
    return out


def endpoint_pod(spec: Any, endpoint: str) -> str:
    """The pod name for an expected endpoint (``ip:port`` or a pod name)."""
    if ":" in endpoint:
        ip = endpoint.rsplit(":", 1)[0].strip("[]")
        for p in spec.pods:
            if p.ip == ip:
                return p.name
    return endpoint
