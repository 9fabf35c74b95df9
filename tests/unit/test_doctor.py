"""The doctor (harness/doctor.py) and the session-start preflight (harness/preflight.py),
without root: a fake /proc and /boot for the kernel, a PATH with a binary hidden."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.doctor import (
    MISSING,
    OK,
    UNKNOWN,
    Kernel,
    Needs,
    essentials,
    failure_message,
    kernel_findings,
)
from harness.preflight import runs_the_suite

ROOT = Path(__file__).resolve().parents[2]


def path_without(tmp_path: Path, *hidden: str) -> str:
    """A PATH of one directory linking every program of the current PATH except ``hidden``."""
    d = tmp_path / "bin"
    d.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not Path(directory).is_dir():
            continue
        for f in Path(directory).iterdir():
            if f.name in hidden or (d / f.name).exists() or not os.access(f, os.X_OK):
                continue
            (d / f.name).symlink_to(f)
    return str(d)


@pytest.mark.parametrize(("binary", "package"), [
    ("conntrack", "conntrack"), ("nft", "nftables"), ("ip", "iproute2"),
    ("iptables-nft-restore", "iptables")])
def test_a_binary_hidden_from_path_is_named_with_its_debian_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed here")
    monkeypatch.setenv("PATH", path_without(tmp_path, binary))
    findings = essentials(Needs())
    missing = [f for f in findings if f.status == MISSING and f.name != "root"]
    assert missing, [f.sentence() for f in findings]
    assert all(f.required for f in missing)
    text = failure_message(findings) or ""
    assert binary in text and f"apt-get install {package}" in text, text


def test_nothing_missing_means_no_failure_message(monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in ("ip", "nft", "conntrack", "iptables-nft-restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed here")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    findings = [f for f in essentials(Needs()) if f.name != "network namespaces"]
    assert failure_message(findings) is None, [f.sentence() for f in findings]


def test_root_is_an_essential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    text = failure_message(essentials(Needs())) or ""
    assert "root: running as uid 1000" in text and "sudo" in text


def test_legacy_flavour_and_nftables_mode_need_their_own_binaries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_without(tmp_path, "iptables-legacy-restore", "nft"))
    legacy = {f.name: f for f in essentials(Needs(flavour="legacy"))}
    assert legacy["iptables (legacy flavour)"].blocking
    assert "iptables-legacy-restore" in legacy["iptables (legacy flavour)"].detail
    nft = {f.name: f for f in essentials(Needs.from_options(proxier="reference-nft"))}
    assert "iptables (nft flavour)" not in nft and nft["nft"].blocking


def test_proxier_command_program_must_exist(tmp_path: Path) -> None:
    findings = {f.name: f for f in essentials(Needs(proxier_cmd=f"{tmp_path}/myproxy --node {{node}}"))}
    assert findings["proxier command"].status == MISSING
    ok = {f.name: f for f in essentials(Needs(proxier_cmd="env A=1 {python} -m refproxier run"))}
    assert ok["proxier command"].status == "info"


def _kernel(tmp_path: Path, config: str, modules: str | None = None,
            builtin: str | None = None, dep: str | None = None, bridge: bool = False) -> Kernel:
    proc, boot, mods = tmp_path / "proc", tmp_path / "boot", tmp_path / "modules"
    for d in (proc, boot, mods, proc / "net"):
        d.mkdir(parents=True, exist_ok=True)
    (proc / "config.gz").write_bytes(gzip.compress(config.encode()))
    if modules is not None:
        (proc / "modules").write_text(modules)
    if builtin is not None:
        (mods / "modules.builtin").write_text(builtin)
    if dep is not None:
        (mods / "modules.dep").write_text(dep)
    if bridge:
        (proc / "sys" / "net" / "bridge").mkdir(parents=True)
    return Kernel(release="6.1.0-test", proc=proc, boot=boot, modules_dir=mods)


def test_kernel_pieces_are_read_never_loaded(tmp_path: Path) -> None:
    config = "\n".join([
        "CONFIG_NF_CONNTRACK=m", "CONFIG_NF_NAT=y", "CONFIG_VETH=m",
        "CONFIG_NETFILTER_XT_MATCH_STATISTIC=m", "# CONFIG_NETFILTER_XT_MATCH_RECENT is not set",
        "CONFIG_BRIDGE=m", "CONFIG_BRIDGE_NETFILTER=m", "CONFIG_NF_CT_PROTO_SCTP=y",
    ])
    kernel = _kernel(
        tmp_path, config,
        modules="nf_conntrack 172032 3 nf_nat, Live 0x0\n",
        dep="kernel/net/netfilter/xt_statistic.ko.xz:\nkernel/net/bridge/br_netfilter.ko:\n"
            "kernel/net/bridge/bridge.ko:\n",
        builtin="")
    found = {f.name.removeprefix("kernel: "): f for f in
             kernel_findings(Needs(pod_network="bridge"), kernel)}
    assert found["conntrack"].status == OK and "loaded" in found["conntrack"].detail
    assert found["NAT"].status == OK and "built in" in found["NAT"].detail
    assert found["statistic match (endpoint choice)"].status == OK
    assert "loads on first use" in found["statistic match (endpoint choice)"].detail
    recent = found["recent match (session affinity)"]
    assert recent.status == MISSING and recent.blocking
    assert "CONFIG_NETFILTER_XT_MATCH_RECENT" in recent.detail
    # veth is a module per the config, but not among the installed modules
    assert found["veth"].status == MISSING and "linux-image-6.1.0-test" in (found["veth"].fix or "")
    # br_netfilter does not load by itself: the fix is to load it
    br = found["br_netfilter"]
    assert br.status == MISSING and br.fix == "load it: modprobe br_netfilter"
    assert found["bridge"].status == OK


def test_br_netfilter_loaded_and_optional_pieces(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, "CONFIG_BRIDGE_NETFILTER=m\n# CONFIG_NFT_NUMGEN is not set\n",
                     modules="", bridge=True)
    found = {f.name.removeprefix("kernel: "): f for f in kernel_findings(Needs(), kernel)}
    assert found["br_netfilter"].status == OK and not found["br_netfilter"].required
    numgen = found["nft numgen (endpoint choice)"]
    assert numgen.status == MISSING and not numgen.blocking and numgen.why == "nftables mode"
    nft_mode = {f.name: f for f in kernel_findings(Needs(netfilter="nftables"), kernel)}
    assert nft_mode["kernel: nft numgen (endpoint choice)"].blocking


def test_without_config_or_modules_the_kernel_is_unknown_not_missing(tmp_path: Path) -> None:
    kernel = Kernel(release="x", proc=tmp_path / "none", boot=tmp_path / "none",
                    modules_dir=tmp_path / "none")
    found = kernel_findings(Needs(), kernel)
    assert {f.status for f in found} == {UNKNOWN}


def test_preflight_applies_to_suite_paths_only(tmp_path: Path) -> None:
    assert runs_the_suite(["conformance/test_nodeport.py::test_x"], ROOT)
    assert runs_the_suite(["scenarios/bugs/k8s-59368.yaml"], ROOT)
    assert runs_the_suite(["."], ROOT)  # the whole repository includes the suite
    assert runs_the_suite([str(tmp_path / "my-bug.yaml")], ROOT)
    assert not runs_the_suite(["tests/unit"], ROOT)
    assert not runs_the_suite(["-k", "x", "tests/unit/test_doctor.py"], ROOT)


def test_a_run_without_conntrack_fails_at_session_start(tmp_path: Path) -> None:
    """The preflight's sentence, pytest's usage-error status, before any report is written."""
    env = {**os.environ, "PATH": path_without(tmp_path, "conntrack")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/test_clusterip_dnat.py", "-p",
         "no:cacheprovider", "-q", "--preflight=on", f"--report-dir={tmp_path / 'r'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "conntrack is not on PATH; install it: apt-get install conntrack" in proc.stderr
    assert not (tmp_path / "r" / "report.json").exists()


def test_real_kube_proxy_must_be_built_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVC_CONFORMANCE_CACHE", str(tmp_path / "cache"))
    needs = Needs.from_options(proxier="kube-proxy-nft", kube_proxy_version="v1.33.13")
    assert needs.netfilter == "nftables" and needs.kube_proxy_version == "v1.33.13"
    [build] = [f for f in essentials(needs) if f.name == "kube-proxy v1.33.13"]
    assert build.blocking and build.fix and "svc-conformance build-kube v1.33.13" in build.fix
    binary = tmp_path / "cache" / "kube" / "v1.33.13" / "bin" / "kube-proxy"
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    [build] = [f for f in essentials(needs) if f.name == "kube-proxy v1.33.13"]
    assert build.status == OK
