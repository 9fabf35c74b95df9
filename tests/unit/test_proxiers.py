"""The proxier contract's pure parts: resolving --proxier options into a ProxierSpec."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.proxiers import ProxierConfigError, resolve


def test_reference_proxier_states_its_version() -> None:
    spec = resolve(None, None, None)
    assert spec.name == "reference" and spec.version and spec.version.startswith("refproxier ")
    out = subprocess.run([sys.executable, "-m", "refproxier", "--version"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == spec.version


def test_version_option_is_what_the_report_states() -> None:
    custom = resolve(None, "myproxy --node {node}", "acks", "myproxy v0.3.1")
    assert (custom.name, custom.version, custom.capabilities) == (
        "custom", "myproxy v0.3.1", frozenset({"acks"}))
    assert resolve(None, "myproxy", None).version is None
    assert resolve("reference-nft", None, None, "patched").version == "patched"


def test_unknown_proxier_and_placeholder_say_what_to_do() -> None:
    with pytest.raises(ProxierConfigError, match="not known; choose one of"):
        resolve("nope", None, None)
    with pytest.raises(ProxierConfigError, match="unknown placeholders"):
        resolve(None, "myproxy {nodename}", None)


def test_nftables_mode_claims_no_iptables_flavour() -> None:
    assert resolve("reference-nft", None, None).netfilter == "nftables"
    assert resolve("reference", None, None).netfilter == "iptables"
    assert resolve(None, "myproxy", None).netfilter == "iptables"


def _fake_kube_proxy(tmp_path, monkeypatch, version: str = "v1.37.2"):
    from harness import kubebins

    monkeypatch.setenv("SVC_CONFORMANCE_CACHE", str(tmp_path))
    binary = kubebins.binary_path("kube-proxy", version)
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\necho Kubernetes {version}\n")
    binary.chmod(0o755)
    return binary


def test_kube_proxy_not_built_says_how_to_build_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SVC_CONFORMANCE_CACHE", str(tmp_path))
    with pytest.raises(ProxierConfigError, match="harness.kubebins build v1.33.13"):
        resolve("kube-proxy", None, None, kube_proxy_version="v1.33.13")


def test_kube_proxy_modes_declare_what_kube_proxy_does(tmp_path, monkeypatch) -> None:
    binary = _fake_kube_proxy(tmp_path, monkeypatch)
    ipt = resolve("kube-proxy", None, None)
    nft = resolve("kube-proxy-nft", None, None)
    assert ipt.version == "Kubernetes v1.37.2" and ipt.release == "v1.37.2"
    assert ipt.needs_api and nft.needs_api
    assert (ipt.netfilter, nft.netfilter) == ("iptables", "nftables")
    # no acknowledgements: the harness waits on its sentinel Service
    assert not ipt.has("acks") and not nft.has("acks")
    assert ipt.has("localhost-nodeports") and not nft.has("localhost-nodeports")
    argv = ipt.argv(node="node1", node_ip="192.0.2.11", kubeconfig="/k", cluster_cidr="10.244.0.0/16",
                    iptables="legacy")
    assert str(binary) in argv and "--proxy-mode=iptables" in argv
    assert "--hostname-override=node1" in argv and "--conntrack-max-per-core=0" in argv
    assert any(a.startswith("PATH=") and a.split("=", 1)[1].split(":")[0].endswith("/legacy")
               for a in argv)
    assert "--proxy-mode=nftables" in nft.argv(node="n", node_ip="192.0.2.11")
