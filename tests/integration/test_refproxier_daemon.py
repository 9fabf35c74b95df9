"""The reference proxier's daemon in real network namespaces (root only).

Each test makes its own throwaway namespaces (``rpd-test-*``), runs the daemon in one with
``ip netns exec``, publishes state through the state directory, waits for the daemon's
``applied/<node>`` acknowledgement and then inspects the namespace's rules with
iptables-save, for both iptables flavours. Nothing is created in the root namespace; a
module fixture checks that the host's rules are the same after the module as before.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from refproxier.iptables import service_chain_name
from servicemodel.statedir import read_applied, state_path, write_state

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

PY = sys.executable
WAIT = 15.0  # seconds for a condition the daemon should reach within ~100 ms
NODE = "node1"
SVC1_CHAIN = "KUBE-SVC-XPGD46QRK7WJZT7O"  # ns1/svc1:p80 tcp (kube-proxy-notes §1.1)
SVC2_CHAIN = service_chain_name("ns1/svc2:p8080", "tcp")
_counter = itertools.count()

# Runs refproxier.daemon with a ProxierConfig given as JSON (independent of the CLI's flags).
RUNNER = r"""
import json, sys
from refproxier.config import ProxierConfig
from refproxier import runner
mode, cfg, state_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
c = ProxierConfig(**cfg)
sys.exit(runner.run(c, state_dir) if mode == "run" else runner.cleanup(c))
"""


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def wait_for(cond: Callable[[], object], what: str, timeout: float = WAIT,
             evidence: Callable[[], str] = lambda: "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{evidence()}")
        time.sleep(0.05)


# --- builders ------------------------------------------------------------------------------


def service(name: str, cluster_ip: str, *, port: int = 80, protocol: str = "TCP",
            port_name: str = "p80", target_port: int | None = None, **spec: object) -> dict:
    status = spec.pop("status", None)
    obj = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "ns1", "name": name},
        "spec": {"type": spec.pop("type", "ClusterIP"), "clusterIP": cluster_ip,
                 "clusterIPs": [cluster_ip],
                 "ports": [{"name": port_name, "port": port, "protocol": protocol,
                            "targetPort": target_port or port}], **spec},
    }
    if status:
        obj["status"] = status
    return obj


def slice_(svc: str, ips: list[str], *, port: int = 80, protocol: str = "TCP",
           port_name: str = "p80", node: str | None = None) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "ns1", "name": f"{svc}-x1",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                       **({"nodeName": node} if node else {})} for ip in ips],
        "ports": [{"name": port_name, "port": port, "protocol": protocol}],
    }


# --- namespaces and the daemon -----------------------------------------------------------------


def _host_rules() -> str:
    out = []
    for tool in ("iptables-legacy-save", "iptables-nft-save"):
        p = sh(tool, check=False)
        # Counters move with traffic; everything else must stay as it was.
        out += [re.sub(r"\[\d+:\d+\]", "", ln) for ln in p.stdout.splitlines()
                if ln and not ln.startswith("#")]
    return "\n".join(out)


@pytest.fixture(scope="module", autouse=True)
def host_untouched() -> Iterator[None]:
    before = _host_rules()
    yield
    assert _host_rules() == before, "the root namespace's iptables rules changed"


@pytest.fixture(scope="module", autouse=True)
def reap_killed_runs() -> None:
    """Delete namespaces a killed earlier run of this module left (their pid is gone)."""
    for line in sh("ip", "netns", "list").stdout.splitlines():
        m = re.match(r"(rpd-test-(\d+)-\d+)\b", line)
        if m and not Path(f"/proc/{m.group(2)}").exists():
            sh("ip", "netns", "del", m.group(1), check=False)


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Factory of fresh named namespaces with lo up; all deleted at teardown."""
    made: list[str] = []

    def make() -> str:
        name = f"rpd-test-{os.getpid()}-{next(_counter)}"
        sh("ip", "netns", "add", name)
        made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    yield make
    for name in reversed(made):
        sh("ip", "netns", "del", name, check=False)


@dataclass
class Daemon:
    netns: str
    state_dir: Path
    log_path: Path
    flavour: str
    proc: subprocess.Popen | None = None
    gen: int = 0
    extra_procs: list[subprocess.Popen] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def publish(self, items: list[dict]) -> int:
        self.gen += 1
        write_state(self.state_dir, items, self.gen)
        return self.gen

    def wait_applied(self, gen: int) -> None:
        wait_for(lambda: (read_applied(self.state_dir, NODE) or 0) >= gen,
                 f"generation {gen} applied", evidence=self.evidence)
        assert self.proc is not None and self.proc.poll() is None, self.evidence()

    def apply(self, items: list[dict]) -> int:
        gen = self.publish(items)
        self.wait_applied(gen)
        return gen

    def ipt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.netns, f"iptables-{self.flavour}", "-w", *args,
                  check=check)

    def save(self, table: str | None = None) -> str:
        argv = ["ip", "netns", "exec", self.netns, f"iptables-{self.flavour}-save"]
        if table:
            argv += ["-t", table]
        return sh(*argv).stdout

    def evidence(self) -> str:
        return f"--- daemon log ({self.netns}) ---\n{self.log()}\n--- rules ---\n{self.save()}"

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=WAIT)

    def ns_run(self, *argv: str, check: bool = True, input: str | None = None):
        return sh("ip", "netns", "exec", self.netns, *argv, check=check, input=input)


def _runner_argv(netns: str, mode: str, cfg: dict, state_dir: Path) -> list[str]:
    return ["ip", "netns", "exec", netns, PY, "-c", RUNNER, mode, json.dumps(cfg), str(state_dir)]


@pytest.fixture
def start_daemon(make_netns, tmp_path) -> Iterator[Callable[..., Daemon]]:
    """Factory: a daemon in a fresh namespace (``flavour``, config overrides). Every process
    it started is stopped at teardown, by pid."""
    daemons: list[Daemon] = []

    def start(flavour: str, *, cli_args: list[str] | None = None,
              before: Callable[[str], None] | None = None, **cfg: object) -> Daemon:
        ns = make_netns()
        if before is not None:
            before(ns)
        sd = tmp_path / f"state-{ns}"
        sd.mkdir()
        conf = {"hostname": NODE, "node_ips": ["192.0.2.1"], "cluster_cidrs": ["10.244.0.0/16"],
                "iptables_mode": flavour, "min_sync_period": 0.0, "sync_period": 300.0, **cfg}
        d = Daemon(ns, sd, tmp_path / f"daemon-{ns}.log", flavour)
        if cli_args is not None:  # through the real command line
            argv = ["ip", "netns", "exec", ns, PY, "-m", "refproxier", "run", "--state-dir",
                    str(sd), *cli_args]
        else:
            argv = _runner_argv(ns, "run", conf, sd)
        with open(d.log_path, "w") as logf:
            d.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)
        daemons.append(d)
        return d

    yield start
    for d in daemons:
        for p in [d.proc, *d.extra_procs]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=WAIT)


FLAVOURS = ["legacy", "nft"]
BASE = [service("svc1", "10.96.0.1"), slice_("svc1", ["10.244.1.1", "10.244.2.1"], node=NODE)]


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_applies_updates_partially_and_stops_leaving_rules(start_daemon, flavour):
    d = start_daemon(flavour)
    d.apply(BASE)
    nat = d.save("nat")
    assert f":{SVC1_CHAIN}" in nat, d.evidence()
    assert "--to-destination 10.244.1.1:80" in nat and "--to-destination 10.244.2.1:80" in nat
    assert '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in nat
    for table in ("mangle", "nat", "filter"):
        assert ":KUBE-PROXY-CANARY" in d.save(table)

    # A second service: a partial sync writes its chains and keeps svc1's.
    d.apply([*BASE, service("svc2", "10.96.0.2", port=8080, port_name="p8080"),
             slice_("svc2", ["10.244.1.2"], port=8080, port_name="p8080")])
    nat = d.save("nat")
    assert SVC2_CHAIN in nat and SVC1_CHAIN in nat, d.evidence()
    assert "partial sync of generation 2" in d.log()
    # Removing svc1 deletes its chains (stale chains from iptables-save -t nat).
    d.apply([service("svc2", "10.96.0.2", port=8080, port_name="p8080"),
             slice_("svc2", ["10.244.1.2"], port=8080, port_name="p8080")])
    nat = d.save("nat")
    assert SVC1_CHAIN not in nat and "10.244.1.1:80" not in nat, d.evidence()
    # The jump rules were installed once (EnsureRule checks first).
    assert d.save("nat").count("-j KUBE-SERVICES") == 2  # PREROUTING + OUTPUT

    assert d.stop() == 0
    assert SVC2_CHAIN in d.save("nat")  # left in place, as kube-proxy does
    assert "SIGTERM received" in d.log()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_failed_restore_keeps_last_good_rules_and_retries(start_daemon, flavour):
    d = start_daemon(flavour)
    d.apply(BASE)
    # Someone else's rule references svc1's chain, so deleting that chain must fail.
    d.ipt("-t", "nat", "-N", "TEST-HOLD")
    d.ipt("-t", "nat", "-A", "TEST-HOLD", "-j", SVC1_CHAIN)
    gen = d.publish([service("svc3", "10.96.0.3"), slice_("svc3", ["10.244.3.3"])])
    wait_for(lambda: "iptables-restore (partial) failed" in d.log(), "a logged restore failure",
             evidence=d.evidence)
    assert re.search(r"input line \d+: '-X " + SVC1_CHAIN, d.log()), d.log()
    nat = d.save("nat")
    assert "10.244.1.1:80" in nat and "10.96.0.3" not in nat  # the last good rules, untouched
    assert read_applied(d.state_dir, NODE) == gen - 1
    # Retried (full, with backoff); succeeds once the reference is gone.
    wait_for(lambda: "iptables-restore (full) failed" in d.log(), "a retry", evidence=d.evidence)
    d.ipt("-t", "nat", "-F", "TEST-HOLD")
    d.wait_applied(gen)
    nat = d.save("nat")
    assert "10.96.0.3" in nat and SVC1_CHAIN not in nat, d.evidence()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_flushed_tables_are_noticed_by_the_canary_and_resynced(start_daemon, flavour):
    d = start_daemon(flavour)
    d.apply(BASE)
    for table in ("filter", "nat", "mangle"):
        d.ipt("-t", table, "-F")
        d.ipt("-t", table, "-X")
    assert SVC1_CHAIN not in d.save("nat")
    wait_for(lambda: SVC1_CHAIN in d.save("nat") and "-j KUBE-SERVICES" in d.save("nat"),
             "the rules to come back", evidence=d.evidence)
    assert "canary chain KUBE-PROXY-CANARY missing" in d.log()
    wait_for(lambda: all(":KUBE-PROXY-CANARY" in d.save(t) for t in ("mangle", "nat", "filter")),
             "the canaries to come back", evidence=d.evidence)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_bad_input_never_removes_working_rules(start_daemon, flavour):
    d = start_daemon(flavour)
    d.apply(BASE)
    # An unparsable state: logged, rules kept, no acknowledgement.
    path = state_path(d.state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("apiVersion: v1\nkind: List\nitems: [\n")
    os.replace(tmp, path)
    wait_for(lambda: "keeping current rules" in d.log(), "the bad state to be logged",
             evidence=d.evidence)
    assert "10.244.1.1:80" in d.save("nat") and read_applied(d.state_dir, NODE) == 1
    # A state with one bad object among good ones: the problem is logged, the rest applied.
    bad = service("svc9", "10.96.0.9")
    bad["spec"]["ports"][0]["protocol"] = "ICMP"
    gen = d.apply([*BASE, bad, service("svc4", "10.96.0.4"), slice_("svc4", ["10.244.4.4"])])
    assert "10.244.4.4:80" in d.save("nat") and "10.244.1.1:80" in d.save("nat")
    assert re.search(rf"generation {gen}: .*svc9", d.log()), d.log()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cleanup_removes_everything_and_tolerates_already_gone(start_daemon, flavour, tmp_path):
    d = start_daemon(flavour)
    d.apply(BASE)
    assert d.stop() == 0
    cfg = json.dumps({"hostname": NODE, "iptables_mode": flavour})
    for _ in range(2):  # the second run finds nothing and still succeeds
        p = sh(*_runner_argv(d.netns, "cleanup", json.loads(cfg), tmp_path), check=False)
        assert p.returncode == 0, p.stderr
        rules = d.save()
        assert "KUBE-" not in rules, rules


def test_health_check_node_port_server_follows_local_endpoints(start_daemon):
    d = start_daemon("legacy")
    lb = service("lb1", "10.96.0.5", type="LoadBalancer", externalTrafficPolicy="Local",
                 healthCheckNodePort=32100,
                 status={"loadBalancer": {"ingress": [{"ip": "192.0.2.100"}]}})
    lb["spec"]["ports"][0]["nodePort"] = 30100

    def probe() -> tuple[int, dict | None]:
        p = d.ns_run(PY, "-c", (
            "import urllib.request, urllib.error, json\n"
            "try:\n r = urllib.request.urlopen('http://127.0.0.1:32100/', timeout=5); print(r.status, r.read().decode())\n"
            "except urllib.error.HTTPError as e: print(e.code, e.read().decode())\n"
            "except OSError as e: print(0, 'null')\n"), check=True)
        code, body = p.stdout.split(" ", 1)
        return int(code), json.loads(body)

    d.apply([lb, slice_("lb1", ["10.244.1.5", "10.244.2.5"], node=NODE)])
    assert probe() == (200, {"service": {"namespace": "ns1", "name": "lb1"}, "localEndpoints": 2,
                             "serviceProxyHealthy": True}), d.evidence()
    assert "health check node port" in d.save("filter")
    d.apply([lb, slice_("lb1", ["10.244.2.5"], node="node2")])
    assert probe()[0] == 503
    d.apply([])
    assert probe() == (0, None)  # closed with the service


def _ct(d: Daemon, *args: str) -> subprocess.CompletedProcess:
    return d.ns_run("conntrack", *args, check=False)


def test_udp_conntrack_entries_to_removed_endpoints_are_deleted(start_daemon):
    d = start_daemon("legacy")
    dns = service("dns", "10.96.0.10", port=53, protocol="UDP", port_name="dns")
    dns["spec"]["ports"][0]["nodePort"] = 30053
    dns["spec"]["type"] = "NodePort"
    d.apply([dns, slice_("dns", ["10.244.1.5", "10.244.1.6"], port=53, protocol="UDP",
                         port_name="dns")])
    # Flows as the kernel would have made them: to the clusterIP answered by .5 and .6, and
    # to the NodePort answered by .5; and one answered by .6 from a port it no longer serves.
    for sport, dst, dport, reply, rport in [(4000, "10.96.0.10", 53, "10.244.1.5", 53),
                                            (4001, "10.96.0.10", 53, "10.244.1.6", 53),
                                            (4002, "192.0.2.1", 30053, "10.244.1.5", 53),
                                            (4003, "10.96.0.10", 53, "10.244.1.6", 5353)]:
        p = _ct(d, "-I", "-p", "udp", "-s", "192.0.2.50", "-d", dst, "--sport", str(sport),
                "--dport", str(dport), "-r", reply, "-q", "192.0.2.50", "--reply-port-src",
                str(rport), "--reply-port-dst", str(sport), "-t", "120")
        assert p.returncode == 0, p.stderr
    d.apply([dns, slice_("dns", ["10.244.1.6"], port=53, protocol="UDP", port_name="dns")])
    left = _ct(d, "-L", "-p", "udp", "-o", "extended").stdout
    assert "src=10.244.1.5" not in left, f"{left}\n{d.log()}"
    assert "sport=4001" in left  # a flow to a serving endpoint (ip:port) is kept
    assert "sport=4003" not in left, left  # compared as ip:port, as kube-proxy v1.32+
    assert "conntrack: deleted stale UDP entries" in d.log()


def test_refuses_to_run_in_the_root_namespace(monkeypatch, capsys):
    # In-process with the check forced: nothing may run against the host.
    from refproxier import nethost, runner
    from refproxier.config import ProxierConfig

    monkeypatch.setattr(nethost, "in_root_netns", lambda: True)
    assert runner.run(ProxierConfig(hostname=NODE), "/nonexistent") == 2
    assert "refusing to run in the root network namespace" in capsys.readouterr().err


def test_root_namespace_detection(make_netns):
    ns = make_netns()
    code = "from refproxier.nethost import in_root_netns; print(in_root_netns())"
    assert sh("ip", "netns", "exec", ns, PY, "-c", code).stdout.strip() == "False"
    same_as_init = os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/2/ns/net").st_ino
    assert sh(PY, "-c", code).stdout.strip() == str(same_as_init)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cluster_ip_traffic_reaches_the_endpoint(start_daemon, make_netns, flavour):
    """Real packets: node namespace -- veth -- pod namespace listening on 8080."""
    d = start_daemon(flavour)
    pod = make_netns()
    veth_n, veth_p = f"rpdn{os.getpid() % 10000}{next(_counter)}", f"rpdp{os.getpid() % 10000}{next(_counter)}"
    sh("ip", "-n", d.netns, "link", "add", veth_n, "type", "veth", "peer", "name", veth_p,
       "netns", pod)
    sh("ip", "-n", d.netns, "addr", "add", "192.0.2.1/24", "dev", veth_n)
    sh("ip", "-n", d.netns, "link", "set", veth_n, "up")
    sh("ip", "-n", d.netns, "route", "add", "10.96.0.0/16", "dev", veth_n)  # routed before DNAT
    sh("ip", "-n", pod, "addr", "add", "192.0.2.2/24", "dev", veth_p)
    sh("ip", "-n", pod, "link", "set", veth_p, "up")
    server = subprocess.Popen(
        ["ip", "netns", "exec", pod, PY, "-c",
         "import socket\n"
         "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         "s.bind(('192.0.2.2', 8080)); s.listen(); print('ready', flush=True)\n"
         "while True:\n c, a = s.accept(); c.sendall(('pod1 saw %s' % a[0]).encode()); c.close()\n"],
        stdout=subprocess.PIPE, text=True)
    d.extra_procs.append(server)
    assert server.stdout.readline().strip() == "ready"
    d.apply([service("web", "10.96.0.20", port=80, port_name="http", target_port=8080),
             slice_("web", ["192.0.2.2"], port=8080, port_name="http")])
    p = d.ns_run(PY, "-c", (
        "import socket\n"
        "c = socket.create_connection(('10.96.0.20', 80), timeout=5); print(c.recv(100).decode())\n"))
    # From the node itself: DNATed to the pod, and masqueraded (source not in the pod CIDR
    # 10.244.0.0/16), so the pod sees the node's address.
    assert p.stdout.strip() == "pod1 saw 192.0.2.1", d.evidence()


def test_cli_run_with_auto_flavour_picks_nft_on_an_empty_node(start_daemon):
    d = start_daemon("nft", cli_args=["--hostname-override", NODE, "--node-ip", "192.0.2.1",
                                      "--cluster-cidr", "10.244.0.0/16", "--iptables", "auto",
                                      "--min-sync-period", "0"])
    d.apply(BASE)
    assert "iptables nft (IPv4)" in d.log()
    assert SVC1_CHAIN in d.save("nat"), d.evidence()
    assert d.stop() == 0


def _detect(ns: str) -> str:
    code = "from refproxier.netfilter_exec import detect_flavour; print(detect_flavour(4))"
    return sh("ip", "netns", "exec", ns, PY, "-c", code).stdout.strip()


def test_auto_detection_follows_existing_rules_and_hints(make_netns):
    ns = make_netns()
    assert _detect(ns) == "nft"  # nothing anywhere: the default
    sh("ip", "netns", "exec", ns, "iptables-legacy", "-w", "-A", "INPUT", "-s", "192.0.2.9", "-j", "ACCEPT")
    assert _detect(ns) == "legacy"  # more rules in legacy
    # kubelet's hint chain in nft's mangle table wins over rule counts
    sh("ip", "netns", "exec", ns, "iptables-nft", "-w", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
    assert _detect(ns) == "nft"


def test_nodeport_addresses_use_the_namespace_local_addresses(start_daemon):
    def add_address(ns: str) -> None:
        # (no dummy module everywhere: a veth pair kept inside the namespace)
        sh("ip", "-n", ns, "link", "add", "rpd-dummy0", "type", "veth", "peer", "name", "rpd-dummy1")
        sh("ip", "-n", ns, "addr", "add", "192.0.2.7/32", "dev", "rpd-dummy0")

    d = start_daemon("legacy", before=add_address, nodeport_addresses=["192.0.2.0/24"])
    d.apply(BASE)
    nat = d.save("nat")
    assert re.search(r"-A KUBE-SERVICES -d 192.0.2.7/32 .*-j KUBE-NODEPORTS", nat), d.evidence()


def test_ipv6_rules_and_udp_conntrack_cleanup(start_daemon):
    d = start_daemon("legacy", ip_family=6, node_ips=["2001:db8::1"],
                     cluster_cidrs=["2001:db8:1::/64"])

    def svc6(eps: list[str]) -> list[dict]:
        s = service("dns6", "fd00:10:96::a", port=53, protocol="UDP", port_name="dns",
                    ipFamilies=["IPv6"])
        sl = slice_("dns6", eps, port=53, protocol="UDP", port_name="dns")
        sl["addressType"] = "IPv6"
        return [s, sl]

    d.apply(svc6(["2001:db8:1::5", "2001:db8:1::6"]))
    save6 = sh("ip", "netns", "exec", d.netns, "ip6tables-legacy-save", "-t", "nat").stdout
    assert "-d fd00:10:96::a/128" in save6 and "--to-destination [2001:db8:1::5]:53" in save6, d.log()
    p = _ct(d, "-I", "-p", "udp", "-s", "2001:db8::50", "-d", "fd00:10:96::a",
            "--sport", "4000", "--dport", "53", "-r", "2001:db8:1::5", "-q", "2001:db8::50",
            "--reply-port-src", "53", "--reply-port-dst", "4000", "-t", "120")
    assert p.returncode == 0, p.stderr
    d.apply(svc6(["2001:db8:1::6"]))
    left = _ct(d, "-L", "-f", "ipv6", "-p", "udp").stdout
    assert "2001:db8:1::5" not in left, f"{left}\n{d.log()}"
