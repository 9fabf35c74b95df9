"""The refproxier command line: render without root, flag handling, input errors."""

import subprocess
import sys
import types

import pytest
import yaml

from refproxier import cli
from tests.unit.refproxier.builders import ep, eps_slice, service
from tests.unit.refproxier.iptdump import normalize
from tests.unit.refproxier.test_overall_rules import OVERALL_EXPECTED, overall_objects

FLAGS = ["--hostname-override", "test-node", "--node-ip", "192.168.0.2", "--cluster-cidr", "10.0.0.0/8",
         "--random-fully", "false", "--nfacct", "true"]


@pytest.fixture
def manifests(tmp_path):
    path = tmp_path / "state.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": overall_objects()}))
    return path


def test_render_prints_kube_proxys_rules_for_the_node(manifests, capsys):
    assert cli.main(["render", *FLAGS, str(manifests)]) == 0
    assert normalize(capsys.readouterr().out) == normalize(OVERALL_EXPECTED)


def test_render_reads_several_files_and_shows_problems_on_stderr(tmp_path, capsys):
    a, b = tmp_path / "svc.yaml", tmp_path / "eps.json"
    a.write_text(yaml.safe_dump(service("ns1", "svc1", "172.30.0.41", external_ips=["bogus"])))
    b.write_text(yaml.safe_dump(eps_slice("ns1", "svc1", [ep("10.180.0.1")])))
    assert cli.main(["render", *FLAGS, "--show-problems", str(a), str(b)]) == 0
    out, err = capsys.readouterr()
    assert "KUBE-SEP-SXIVWICOYRO3J4NJ" in out
    assert "problem: Service ns1/svc1: spec.externalIPs[0]: 'bogus' is not an IP address; ignored" in err


def test_bad_manifest_exits_2_with_a_located_message_and_no_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: d}\nspec:\n  ports: [{port: x}]\n")
    assert cli.main(["render", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5 (document 1): Service d/s: field spec.ports[0].port" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--node-ip", "nope"], "--node-ip: 'nope' is not an IP address"),
        (["--cluster-cidr", "10.0.0.0/8,bad"], "--cluster-cidr: 'bad' is not a CIDR"),
        (["--masquerade-bit", "40"], "--masquerade-bit: 40 is not in [0, 31]"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(manifests, capsys, flags, message):
    assert cli.main(["render", *flags, str(manifests)]) == 2
    assert message in capsys.readouterr().err


def test_flags_build_the_config_like_kube_proxy():
    args = cli.build_parser().parse_args([
        "run", "--state-dir", "/s", "--hostname-override", "Node-1", "--node-ip", "192.168.0.2,fd00::2",
        "--node-ip", "192.168.0.3", "--cluster-cidr", "10.0.0.0/8,fd00:10::/64", "--masquerade-all",
        "--nodeport-addresses", "192.168.0.0/24", "--iptables", "nft", "--sync-period", "1m",
        "--min-sync-period", "500ms",
    ])
    cfg = cli.config_from_args(args)
    assert cfg.hostname == "node-1"
    assert cfg.node_ips == ("192.168.0.2", "fd00::2", "192.168.0.3")
    assert cfg.ip_family == 4 and cfg.family_cluster_cidrs == ("10.0.0.0/8",)
    assert cfg.masquerade_all and cfg.iptables_mode == "nft"
    assert cfg.localhost_nodeports is False  # nodeport addresses without loopback
    assert (cfg.sync_period, cfg.min_sync_period) == (60.0, 0.5)


def test_conntrack_tcp_timeouts_default_to_kube_proxy_s_and_take_durations():
    parse = cli.build_parser().parse_args
    cfg = cli.config_from_args(parse(["run", "--state-dir", "/s"]))
    # kube-proxy's defaults (pkg/proxy/apis/config/v1alpha1/defaults.go): 24h and 1h
    assert (cfg.conntrack_tcp_timeout_established, cfg.conntrack_tcp_timeout_close_wait) == (86400, 3600)
    cfg = cli.config_from_args(parse(["run", "--state-dir", "/s", "--conntrack-tcp-timeout-close-wait",
                                      "0", "--conntrack-tcp-timeout-established", "2h"]))
    assert (cfg.conntrack_tcp_timeout_established, cfg.conntrack_tcp_timeout_close_wait) == (7200, 0)


def test_nodeport_addresses_primary_means_the_node_ips():
    args = cli.build_parser().parse_args(
        ["cleanup", "--node-ip", "192.168.0.2", "--nodeport-addresses", "primary"])
    cfg = cli.config_from_args(args)
    assert cfg.nodeport_addresses == ("192.168.0.2/32",)
    assert cfg.nodeport_ips() == ["192.168.0.2"]


def test_run_and_cleanup_call_the_runner_with_the_config(monkeypatch):
    calls = []
    fake = types.ModuleType("refproxier.runner")
    fake.run = lambda config, state_dir: calls.append(("run", config.hostname, state_dir)) or 0
    fake.cleanup = lambda config: calls.append(("cleanup", config.hostname)) or 3
    monkeypatch.setitem(sys.modules, "refproxier.runner", fake)
    import refproxier

    monkeypatch.setattr(refproxier, "runner", fake, raising=False)
    assert cli.main(["run", "--hostname-override", "n1", "--state-dir", "/tmp/s"]) == 0
    assert cli.main(["cleanup", "--hostname-override", "n1"]) == 3
    assert calls == [("run", "n1", "/tmp/s"), ("cleanup", "n1")]


def test_run_passes_a_kubeconfig_and_reads_an_empty_one_as_none(monkeypatch):
    calls = []
    fake = types.ModuleType("refproxier.runner")
    fake.run = lambda config, state_dir, **kw: calls.append((state_dir, kw)) or 0
    monkeypatch.setitem(sys.modules, "refproxier.runner", fake)
    import refproxier

    monkeypatch.setattr(refproxier, "runner", fake, raising=False)
    base = ["run", "--hostname-override", "n1", "--state-dir", "/tmp/s"]
    assert cli.main([*base, "--kubeconfig", "/tmp/kc"]) == 0
    assert cli.main([*base, "--kubeconfig="]) == 0  # {kubeconfig} empty: state.yaml
    assert calls == [("/tmp/s", {"kubeconfig": "/tmp/kc"}), ("/tmp/s", {})]


def test_run_without_a_state_dir_is_a_usage_error(capsys):
    assert cli.main(["run", "--hostname-override", "n1", "--kubeconfig", "/tmp/kc"]) == cli.EXIT_USAGE
    assert "--state-dir" in capsys.readouterr().err


def test_python_dash_m_refproxier_renders(manifests):
    res = subprocess.run([sys.executable, "-m", "refproxier", "render", *FLAGS, str(manifests)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert normalize(res.stdout) == normalize(OVERALL_EXPECTED)
