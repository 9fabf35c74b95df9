"""Dual-stack in one refproxier process: family selection and the combined ack (no root)."""

import pytest

from refproxier import cli, runner
from servicemodel import statedir


def families(*argv):
    return cli.families_from_args(cli.build_parser().parse_args(["render", *argv, "x.yaml"]))


def test_families_follow_node_ips_unless_given():
    assert families() == (4,)
    assert families("--node-ip", "fd00::1") == (6,)
    assert families("--node-ip", "192.0.2.1,fd00::1") == (4, 6)
    assert families("--node-ip", "192.0.2.1,fd00::1", "--ip-family", "4") == (4,)
    assert families("--ip-family", "6,4") == (6, 4)


@pytest.mark.parametrize("bad", ["5", "4,4", "4,6,4", ""])
def test_bad_ip_family_is_a_usage_error(bad):
    with pytest.raises(SystemExit) as e:
        families("--ip-family", bad)
    assert e.value.code == cli.EXIT_USAGE


def test_render_refuses_two_explicit_families(tmp_path, capsys):
    f = tmp_path / "empty.yaml"
    f.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    assert cli.main(["render", "--ip-family", "4,6", str(f)]) == cli.EXIT_USAGE
    assert "one family at a time" in capsys.readouterr().err


def test_ack_is_written_when_both_families_applied(tmp_path):
    ack = runner.BothFamiliesAck([4, 6])
    ack.for_family(4)(str(tmp_path), "n1", 3)
    assert statedir.read_applied(tmp_path, "n1") is None
    ack.for_family(6)(str(tmp_path), "n1", 2)
    assert statedir.read_applied(tmp_path, "n1") == 2
    ack.for_family(6)(str(tmp_path), "n1", 4)
    assert statedir.read_applied(tmp_path, "n1") == 3
