"""What a run needs on this host, checked without changing anything: ``svc-conformance doctor``.

Each prerequisite becomes a ``Finding``: ok, missing, unknown (cannot tell from here) or
info, with what it was found to be, what to install when it is missing (Debian package
names), and whether the run being prepared needs it (``Needs``: the proxier's netfilter
mode, the iptables flavour, the IP family, the pod network, the control plane).

Nothing is changed to find out. Binaries are looked up on ``PATH`` and asked their
version. Kernel pieces are read, never loaded: ``/proc/modules`` (loaded), the kernel
configuration (``/proc/config.gz`` or ``/boot/config-<release>``: built in or a module),
``/lib/modules/<release>/modules.builtin`` and ``modules.dep`` (a module that is there loads
on first use), ``/proc/net/ip_tables_matches`` and ``_targets`` (registered xtables
extensions), ``/proc/sys/net/bridge`` (br_netfilter loaded). The one active probe creates a
throwaway network namespace (``unshare --net true``: anonymous, gone when the process
exits) to prove that namespaces can be made. The API control planes listen inside the
run's lan namespace, so no port of the root namespace is in play and none is checked.

``essentials(needs)`` is the subset a run cannot start without (root, ip and network
namespaces, the iptables flavour or nft, conntrack); ``harness.preflight`` checks it at
session start, so such a run fails at once with the same sentence ``doctor`` prints.
"""

from __future__ import annotations

import gzip
import os
import platform
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

OK, MISSING, UNKNOWN, INFO = "ok", "missing", "unknown", "info"


@dataclass(frozen=True)
class Needs:
    """The run being prepared, as far as prerequisites depend on it."""

    #: "iptables" or "nftables": how the proxier under test programs the kernel
    netfilter: str = "iptables"
    #: the iptables flavour (``--iptables``), when netfilter is iptables
    flavour: str = "nft"
    ip_family: str = "ipv4"
    pod_network: str = "routed"
    control_plane: str = "statedir"
    #: a proxier command (``--proxier-cmd``): its program must exist
    proxier_cmd: str | None = None
    #: the real kube-proxy release the run uses (``--proxier kube-proxy*``), if any
    kube_proxy_version: str | None = None
    #: the proxier declares SCTP (the SCTP checks run)
    sctp: bool = True

    @classmethod
    def from_options(cls, proxier: str | None = None, proxier_cmd: str | None = None,
                     iptables: str | None = None, ip_family: str | None = None,
                     pod_network: str | None = None, control_plane: str | None = None,
                     kube_proxy_version: str | None = None,
                     proxier_capabilities: str | None = None) -> Needs:
        """From the run's options (``svc-conformance run``'s or pytest's), without resolving
        the proxier (that may need a built binary, which is itself a finding)."""
        name = proxier or ("custom" if proxier_cmd else "reference")
        netfilter = "nftables" if name.endswith("-nft") else "iptables"
        kube = None
        if name in ("kube-proxy", "kube-proxy-nft"):
            from harness.kubebins import DEFAULT_VERSION

            kube = kube_proxy_version or DEFAULT_VERSION
        if proxier_capabilities is not None:
            sctp = "sctp" in {c.strip() for c in proxier_capabilities.split(",")}
        else:
            sctp = name in ("reference", "reference-nft", "kube-proxy", "kube-proxy-nft")
        return cls(netfilter=netfilter, flavour=iptables or "nft", ip_family=ip_family or "ipv4",
                   pod_network=pod_network or "routed", control_plane=control_plane or "statedir",
                   proxier_cmd=proxier_cmd, kube_proxy_version=kube, sctp=sctp)

    def describe(self) -> str:
        mode = (f"iptables ({self.flavour} flavour)" if self.netfilter == "iptables"
                else "nftables")
        return (f"{mode}, {self.ip_family}, {self.pod_network} pod network, "
                f"control plane {self.control_plane}")


@dataclass(frozen=True)
class Finding:
    """One prerequisite: ``status`` is ok, missing, unknown or info."""

    name: str
    status: str
    detail: str
    #: what to do when it is missing (install a package, load a module, build a binary)
    fix: str | None = None
    #: the run being prepared needs it (else it is needed only for ``why``)
    required: bool = True
    #: what needs it, for an optional finding ("bridge pod network", "SCTP checks")
    why: str = ""

    @property
    def blocking(self) -> bool:
        """A required prerequisite that is missing: the run cannot pass without it."""
        return self.required and self.status == MISSING

    def sentence(self) -> str:
        """The finding as one sentence (what the preflight fails with)."""
        text = f"{self.name}: {self.detail}"
        if self.status == MISSING and self.fix:
            text += f"; {self.fix}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix,
                "required": self.required, "why": self.why}


# --- binaries ------------------------------------------------------------------------------

#: binary -> the Debian package that ships it
DEBIAN_PACKAGES = {
    "ip": "iproute2", "unshare": "util-linux", "nft": "nftables", "conntrack": "conntrack",
    "iptables-nft": "iptables", "iptables-legacy": "iptables", "go": "(see go.dev)",
}
for _flavour in ("nft", "legacy"):
    for _tool in ("iptables", "ip6tables"):
        for _suffix in ("", "-save", "-restore"):
            DEBIAN_PACKAGES[f"{_tool}-{_flavour}{_suffix}"] = "iptables"


def _install(binary: str) -> str:
    pkg = DEBIAN_PACKAGES.get(binary, binary)
    return f"install it: apt-get install {pkg}" if not pkg.startswith("(") else f"install it {pkg}"


def _first_line(argv: list[str], env: dict[str, str] | None = None) -> str | None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text else None


def _binary(name: str, version_args: list[str], *, required: bool = True, why: str = "",
            label: str | None = None) -> Finding:
    path = shutil.which(name)
    label = label or name
    if path is None:
        return Finding(label, MISSING, f"{name} is not on PATH", _install(name), required, why)
    said = _first_line([path, *version_args])
    return Finding(label, OK, f"{path}: {said or 'version not reported'}", None, required, why)


def _iptables(flavour: str, *, required: bool, why: str, ipv6: bool) -> Finding:
    tools = [f"iptables-{flavour}", f"iptables-{flavour}-save", f"iptables-{flavour}-restore"]
    if ipv6:
        tools += [f"ip6tables-{flavour}", f"ip6tables-{flavour}-save", f"ip6tables-{flavour}-restore"]
    label = f"iptables ({flavour} flavour)"
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return Finding(label, MISSING, f"{', '.join(missing)} not on PATH",
                       "install them: apt-get install iptables", required, why)
    said = _first_line([shutil.which(tools[0]) or tools[0], "--version"])
    return Finding(label, OK, f"{said or 'version not reported'} ({', '.join(tools)})",
                   None, required, why)


# --- the kernel, read and never loaded -------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """A kernel piece: its config symbol and the module that provides it (if any)."""

    label: str
    config: str
    module: str | None = None
    #: name in /proc/net/ip_tables_matches or _targets, when it is an xtables extension
    xtables: str | None = None
    #: does not load by itself on first use (br_netfilter): it must be loaded beforehand
    manual_load: bool = False


@dataclass
class Kernel:
    """What can be read about the running kernel; paths are parameters for tests."""

    release: str = field(default_factory=platform.release)
    proc: Path = Path("/proc")
    boot: Path = Path("/boot")
    modules_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.modules_dir is None:
            self.modules_dir = Path("/lib/modules") / self.release

    @cached_property
    def config(self) -> tuple[dict[str, str], str | None]:
        """The build configuration and where it was read (empty if nowhere)."""
        for path in (self.proc / "config.gz", self.boot / f"config-{self.release}",
                     (self.modules_dir or Path()) / "config"):
            try:
                raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            except OSError:
                continue
            values: dict[str, str] = {}
            for line in raw.decode(errors="replace").splitlines():
                m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
                if m:
                    values[m.group(1)] = m.group(2)
                m = re.match(r"^# (CONFIG_\w+) is not set", line)
                if m:
                    values[m.group(1)] = "n"
            return values, str(path)
        return {}, None

    @cached_property
    def loaded(self) -> set[str] | None:
        try:
            text = (self.proc / "modules").read_text()
        except OSError:
            return None  # a kernel without loadable modules has no /proc/modules
        return {line.split()[0].replace("-", "_") for line in text.splitlines() if line.strip()}

    def _module_names(self, filename: str) -> set[str] | None:
        try:
            text = ((self.modules_dir or Path()) / filename).read_text()
        except OSError:
            return None
        names = set()
        for line in text.splitlines():
            first = line.split(":", 1)[0].strip()
            if first:
                base = first.rsplit("/", 1)[-1]
                names.add(re.sub(r"\.ko(\.\w+)?$", "", base).replace("-", "_"))
        return names

    @cached_property
    def builtin_modules(self) -> set[str] | None:
        return self._module_names("modules.builtin")

    @cached_property
    def available_modules(self) -> set[str] | None:
        return self._module_names("modules.dep")

    @cached_property
    def xtables(self) -> set[str]:
        names: set[str] = set()
        for f in ("ip_tables_matches", "ip_tables_targets", "ip6_tables_matches", "ip6_tables_targets"):
            try:
                names.update((self.proc / "net" / f).read_text().split())
            except OSError:
                pass
        return names

    def state(self, piece: Piece) -> tuple[str, str, str | None]:
        """(status, what was found, fix) for one piece."""
        config, where = self.config
        value = config.get(f"CONFIG_{piece.config}")
        module = (piece.module or "").replace("-", "_")
        if piece.manual_load and piece.config == "BRIDGE_NETFILTER":
            if (self.proc / "sys" / "net" / "bridge").is_dir():
                return OK, "loaded (net.bridge.bridge-nf-call-* present)", None
        if module and self.loaded is not None and module in self.loaded:
            return OK, f"{piece.module} loaded", None
        if value == "y" or (module and self.builtin_modules and module in self.builtin_modules):
            return OK, f"built in (CONFIG_{piece.config}=y)", None
        if piece.xtables and piece.xtables in self.xtables:
            return OK, f"xtables extension {piece.xtables!r} registered", None
        if value == "m" or (module and self.available_modules and module in self.available_modules):
            if self.available_modules is not None and module and module not in self.available_modules:
                return (MISSING, f"CONFIG_{piece.config}=m but {piece.module}.ko is not in "
                        f"{self.modules_dir}",
                        f"install the modules of the running kernel: apt-get install "
                        f"linux-image-{self.release}")
            if piece.manual_load:
                return (MISSING, f"{piece.module} is a module and not loaded; it does not load "
                        "by itself", f"load it: modprobe {piece.module}")
            return OK, f"{piece.module} is a module; it loads on first use", None
        if value == "n" or (value is None and where is not None and module and
                            self.available_modules is not None):
            return (MISSING, f"this kernel is built without CONFIG_{piece.config} "
                    f"(config read from {where})",
                    "use a kernel that has it (Debian's linux-image-amd64 does, as a module)")
        return (UNKNOWN, f"cannot tell: {piece.module or piece.config} is not loaded and there "
                "is no kernel configuration (/proc/config.gz, /boot/config-"
                f"{self.release}) or {self.modules_dir}/modules.dep to read", None)


# (label, piece, what needs it): by mode
_COMMON = [
    Piece("conntrack", "NF_CONNTRACK", "nf_conntrack"),
    Piece("NAT", "NF_NAT", "nf_nat"),
    Piece("veth", "VETH", "veth"),
]
_IPTABLES = [
    Piece("statistic match (endpoint choice)", "NETFILTER_XT_MATCH_STATISTIC", "xt_statistic", "statistic"),
    Piece("recent match (session affinity)", "NETFILTER_XT_MATCH_RECENT", "xt_recent", "recent"),
    Piece("comment match", "NETFILTER_XT_MATCH_COMMENT", "xt_comment", "comment"),
    Piece("conntrack match", "NETFILTER_XT_MATCH_CONNTRACK", "xt_conntrack", "conntrack"),
    Piece("addrtype match", "NETFILTER_XT_MATCH_ADDRTYPE", "xt_addrtype", "addrtype"),
    Piece("mark match and target", "NETFILTER_XT_MARK", "xt_mark", "mark"),
    Piece("DNAT/SNAT targets", "NETFILTER_XT_NAT", "xt_nat", "DNAT"),
    Piece("MASQUERADE target", "NETFILTER_XT_TARGET_MASQUERADE", "xt_MASQUERADE", "MASQUERADE"),
    Piece("REJECT target", "IP_NF_TARGET_REJECT", "ipt_REJECT", "REJECT"),
]
_IPTABLES_NFT = [
    Piece("nf_tables", "NF_TABLES", "nf_tables"),
    Piece("nft_compat (xtables in nf_tables)", "NFT_COMPAT", "nft_compat"),
    Piece("nft ct expression", "NFT_CT", "nft_ct"),
    Piece("nft nat expression", "NFT_NAT", "nft_nat"),
]
_IPTABLES_LEGACY = [
    Piece("ip_tables", "IP_NF_IPTABLES", "ip_tables"),
    Piece("iptables nat table", "IP_NF_NAT", "iptable_nat"),
    Piece("iptables filter table", "IP_NF_FILTER", "iptable_filter"),
]
_IP6TABLES_LEGACY = [
    Piece("ip6_tables", "IP6_NF_IPTABLES", "ip6_tables"),
    Piece("ip6tables nat table", "IP6_NF_NAT", "ip6table_nat"),
    Piece("ip6tables filter table", "IP6_NF_FILTER", "ip6table_filter"),
    Piece("ip6tables REJECT target", "IP6_NF_TARGET_REJECT", "ip6t_REJECT"),
]
_NFTABLES = [
    Piece("nf_tables", "NF_TABLES", "nf_tables"),
    Piece("nft ct expression", "NFT_CT", "nft_ct"),
    Piece("nft nat expression", "NFT_NAT", "nft_nat"),
    Piece("nft masquerade", "NFT_MASQ", "nft_masq"),
    Piece("nft numgen (endpoint choice)", "NFT_NUMGEN", "nft_numgen"),
    Piece("nft reject", "NFT_REJECT", "nft_reject"),
    Piece("nft fib (local addresses)", "NFT_FIB_IPV4", "nft_fib_ipv4"),
]
_NFTABLES6 = [Piece("nft fib for IPv6", "NFT_FIB_IPV6", "nft_fib_ipv6")]
_BRIDGE = [
    Piece("bridge", "BRIDGE", "bridge"),
    Piece("br_netfilter", "BRIDGE_NETFILTER", "br_netfilter",
          manual_load=True),
]
_SCTP = [
    Piece("SCTP conntrack", "NF_CT_PROTO_SCTP", None),
]
_SCTP_IPTABLES = [Piece("sctp match", "NETFILTER_XT_MATCH_SCTP", "xt_sctp", "sctp")]


def kernel_findings(needs: Needs, kernel: Kernel | None = None) -> list[Finding]:
    """Every kernel piece, marked required or optional for ``needs``."""
    kernel = kernel or Kernel()
    groups: list[tuple[list[Piece], bool, str]] = [(_COMMON, True, "every run")]
    iptables_mode = needs.netfilter == "iptables"
    ipv6 = needs.ip_family == "ipv6"
    groups.append((_IPTABLES, iptables_mode, "iptables mode"))
    groups.append((_IPTABLES_NFT, iptables_mode and needs.flavour == "nft",
                   "iptables-nft (the nft flavour)"))
    groups.append((_IPTABLES_LEGACY, iptables_mode and needs.flavour == "legacy",
                   "iptables-legacy (the legacy flavour)"))
    groups.append((_IP6TABLES_LEGACY, iptables_mode and needs.flavour == "legacy" and ipv6,
                   "iptables-legacy over IPv6"))
    groups.append((_NFTABLES, not iptables_mode, "nftables mode"))
    groups.append((_NFTABLES6, not iptables_mode and ipv6, "nftables mode over IPv6"))
    groups.append((_BRIDGE, needs.pod_network == "bridge", "the bridge pod network (--pod-network bridge)"))
    groups.append((_SCTP, needs.sctp, "the SCTP checks"))
    groups.append((_SCTP_IPTABLES, needs.sctp and iptables_mode, "the SCTP checks in iptables mode"))
    out: list[Finding] = []
    seen: dict[str, int] = {}
    for pieces, required, why in groups:
        for piece in pieces:
            status, detail, fix = kernel.state(piece)
            finding = Finding(f"kernel: {piece.label}", status, detail, fix, required, why)
            if piece.config in seen:  # needed by two modes: keep one, required if either is
                i = seen[piece.config]
                if required and not out[i].required:
                    out[i] = finding
                continue
            seen[piece.config] = len(out)
            out.append(finding)
    return out


# --- the rest ---------------------------------------------------------------------------------

def _root() -> Finding:
    if os.geteuid() == 0:
        return Finding("root", OK, "running as root (uid 0)")
    return Finding("root", MISSING, f"running as uid {os.geteuid()}; network namespaces and "
                   "netfilter need root", "run it as root (sudo svc-conformance ...)")


def _namespaces() -> Finding:
    """``ip netns`` works, and a namespace can be created (a throwaway one, anonymous)."""
    ip = shutil.which("ip")
    if ip is None:
        return Finding("network namespaces", MISSING, "ip (iproute2) is not on PATH",
                       _install("ip"))
    if not Path("/proc/self/ns/net").exists():
        return Finding("network namespaces", MISSING, "this kernel has no network namespaces "
                       "(/proc/self/ns/net is absent)", "use a kernel with CONFIG_NET_NS=y")
    if os.geteuid() != 0:
        return Finding("network namespaces", UNKNOWN, "creating one needs root")
    listing = subprocess.run([ip, "netns", "list"], capture_output=True, text=True)
    if listing.returncode != 0:
        return Finding("network namespaces", MISSING, f"ip netns list failed: "
                       f"{(listing.stderr or listing.stdout).strip()}",
                       "install a current iproute2: apt-get install iproute2")
    unshare = shutil.which("unshare")
    if unshare is None:
        return Finding("network namespaces", OK, "ip netns works (unshare, from util-linux, is "
                       "not on PATH: no throwaway namespace was made to prove more)")
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return Finding("network namespaces", MISSING, "a network namespace cannot be created: "
                       f"{(probe.stderr or probe.stdout).strip()}",
                       "run as root on the host or in a privileged container (CAP_SYS_ADMIN)")
    return Finding("network namespaces", OK, "ip netns works; a throwaway namespace was "
                   "created and is gone")


def _ports() -> Finding:
    return Finding("API ports", INFO, "the API control planes listen inside the run's lan "
                   "namespace (the small API server on 6443 on the lan router address; "
                   "kube-apiserver and etcd likewise): no port of this host's root namespace "
                   "is used, so none needs to be free")


def _proxier_command(cmd: str) -> Finding:
    try:
        words = shlex.split(cmd)
    except ValueError as exc:
        return Finding("proxier command", MISSING, f"{cmd!r} does not parse: {exc}",
                       "quote it as a shell would")
    # env VAR=value ... PROGRAM: the program is the first word that is not an assignment
    if words and Path(words[0]).name == "env":
        words = [w for w in words[1:] if "=" not in w or w.startswith("{")]
    program = words[0] if words else ""
    if not program or "{" in program:
        return Finding("proxier command", INFO, f"{cmd!r}: the program is a placeholder "
                       f"({program or 'empty'}), filled per node")
    found = shutil.which(program)
    if found is None:
        return Finding("proxier command", MISSING, f"{program} (from --proxier-cmd) is not an "
                       "executable on PATH", "build or install the proxier, or give its full path")
    return Finding("proxier command", OK, f"{found}")


GO_MIN = (1, 24)


def go_binary() -> str | None:
    """``go`` on PATH, or where a go.dev or Debian toolchain installs it."""
    for candidate in (shutil.which("go"), "/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _go(needs: Needs) -> Finding:
    from harness import kubebins

    built = needs.kube_proxy_version is None or bool(
        kubebins.binary_path("kube-proxy", needs.kube_proxy_version).is_file())
    required = not built  # only to build the kube-proxy the run needs
    why = "building real kube-proxy (--proxier kube-proxy*)"
    go = go_binary()
    if go is None:
        return Finding("Go toolchain", MISSING, "go is not on PATH (nor in /usr/local/go/bin)",
                       "install Go 1.24 or newer from go.dev into /usr/local/go (Debian 12's "
                       "golang-go is 1.19, too old for Kubernetes 1.33+)", required, why)
    said = _first_line([go, "version"]) or "go"
    m = re.search(r"go(\d+)\.(\d+)", said)
    if m and (int(m.group(1)), int(m.group(2))) < GO_MIN:
        return Finding("Go toolchain", MISSING, f"{said}: older than Go {GO_MIN[0]}.{GO_MIN[1]}",
                       "install Go 1.24 or newer from go.dev into /usr/local/go", required, why)
    return Finding("Go toolchain", OK, f"{go}: {said}", None, required, why)


def _kube_proxy_build(version: str) -> Finding:
    """The real kube-proxy release the run uses, built in the cache."""
    from harness import kubebins

    name = f"kube-proxy {version}"
    try:
        path = kubebins.binary_path("kube-proxy", version)
    except kubebins.BuildError as exc:
        return Finding(name, MISSING, str(exc), "name a release as v1.MINOR.PATCH")
    if path.is_file():
        return Finding(name, OK, f"built: {path}")
    return Finding(name, MISSING, f"not built (looked for {path})",
                   f"build it (needs Go 1.24+): svc-conformance build-kube {version}")


def _kube_builds(needs: Needs) -> list[Finding]:
    """The releases in the cache (the one the run uses is an essential)."""
    from harness import kubebins

    out = []
    versions = kubebins.built_versions()
    where = kubebins.cache_root() / "kube"
    others = [v for v in versions if v != needs.kube_proxy_version]
    if needs.kube_proxy_version is None or others:
        text = ", ".join(others) if others else "none"
        out.append(Finding("kube-proxy builds", INFO, f"{text} in {where} (build more: "
                           "svc-conformance build-kube VERSION)", required=False,
                           why="--proxier kube-proxy / kube-proxy-nft"))
    for component in ("kube-apiserver", "etcd"):
        built = kubebins.built_versions(component)
        if built:
            out.append(Finding(f"{component} builds", INFO, ", ".join(built), required=False))
    return out


def essentials(needs: Needs) -> list[Finding]:
    """What a run cannot start without: root, ip and namespaces, the iptables flavour (or
    nft), conntrack. The preflight checks these at session start."""
    ipv6 = needs.ip_family == "ipv6"
    findings = [_root(), _binary("ip", ["-V"], label="ip (iproute2)"), _namespaces()]
    if needs.netfilter == "iptables":
        findings.append(_iptables(needs.flavour, required=True, why="iptables mode", ipv6=ipv6))
    findings.append(_binary("nft", ["--version"], why="nftables mode, rule dumps and packet traces"))
    findings.append(_binary("conntrack", ["--version"],
                            why="conntrack cleanup by the proxier, conntrack evidence"))
    if needs.proxier_cmd:
        findings.append(_proxier_command(needs.proxier_cmd))
    if needs.kube_proxy_version:
        findings.append(_kube_proxy_build(needs.kube_proxy_version))
    return findings


def check(needs: Needs, kernel: Kernel | None = None) -> list[Finding]:
    """Every prerequisite, required or optional for ``needs``."""
    findings = essentials(needs)
    other = "legacy" if needs.flavour == "nft" or needs.netfilter == "nftables" else "nft"
    flavours = [other] if needs.netfilter == "iptables" else ["nft", "legacy"]
    for flavour in flavours:
        findings.append(_iptables(flavour, required=False, ipv6=needs.ip_family == "ipv6",
                                  why=f"--iptables {flavour}"))
    findings += kernel_findings(needs, kernel)
    findings.append(_ports())
    findings.append(_go(needs))
    findings += _kube_builds(needs)
    return findings


# --- output --------------------------------------------------------------------------------------

def render(needs: Needs, findings: list[Finding], *, color: bool = False) -> str:
    """The doctor's report: what this run needs, then what other options would need; one
    line per finding, and under each missing one what to do."""
    paint: Callable[[str, str], str] = (
        (lambda s, c: f"\x1b[{c}m{s}\x1b[0m") if color else (lambda s, c: s))
    colors = {OK: "32", MISSING: "31;1", UNKNOWN: "33", INFO: "36"}
    width = max((len(f.name) for f in findings), default=10)

    def lines_of(group: list[Finding], with_why: bool) -> list[str]:
        out = []
        for f in group:
            note = f"  [{f.why}]" if with_why and f.why else ""
            out.append(f"  {paint(f'{f.status:<8}', colors.get(f.status, '0'))} "
                       f"{f.name:<{width}}  {f.detail}{note}")
            if f.status == MISSING and f.fix:
                out.append(f"  {'':<8} {'':<{width}}  -> {f.fix}")
        return out

    required = [f for f in findings if f.required]
    optional = [f for f in findings if not f.required]
    lines = [f"svc-conformance doctor on {platform.node()} (kernel {platform.release()})",
             f"needed by this run ({needs.describe()}):", *lines_of(required, False)]
    if optional:
        lines += ["", "needed only with other options:", *lines_of(optional, True)]
    blocking = [f for f in findings if f.blocking]
    lines.append("")
    if blocking:
        lines.append(f"{len(blocking)} prerequisite(s) of this run missing: "
                     + ", ".join(f.name for f in blocking))
    else:
        lines.append("every prerequisite of this run is there")
    return "\n".join(lines)


def failure_message(findings: list[Finding]) -> str | None:
    """The preflight's sentence for missing essentials, or None when nothing is missing."""
    blocking = [f for f in findings if f.blocking]
    if not blocking:
        return None
    return ("svc-conformance: this host lacks what the run needs (svc-conformance doctor "
            "checks everything):\n" + "\n".join(f"  - {f.sentence()}" for f in blocking))
