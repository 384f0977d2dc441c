"""waagent.conf parsing, as waagent parses it, and the checks an image maintainer runs."""

import re
import subprocess
import sys

import pytest

from config import ConfigError, load, parse
from config.keys import BY_NAME, KEYS
from config.shipped import render
from tests.conftest import ROOT


def test_waagent_fixture_values_parse_as_waagent_reads_them(fixtures_dir):
    conf = load(str(fixtures_dir / "test_waagent.conf"), report=False)
    assert conf["Extensions.Enabled"] is True
    assert conf["Provisioning.DeleteRootPassword"] is True
    # End-of-line comments are cut, with or without a space before the #.
    assert conf["Provisioning.SshHostKeyPairType"] == "rsa"
    assert conf["Provisioning.DecodeCustomData"] is False
    assert conf["OS.EnableFIPS"] is True
    assert conf["OS.SshClientAliveInterval"] == 42
    assert conf["OS.SshDir"] == "/notareal/path"
    assert conf["ResourceDisk.MountOptions"] is None          # the literal None
    assert conf["ResourceDisk.Filesystem"] == "ext4"
    # Commented-out keys keep the code default.
    assert conf["Provisioning.PasswordCryptId"] == "6"
    assert conf["Lib.Dir"] == "/var/lib/waagent"


def test_unknown_keys_are_reported_with_file_and_line(fixtures_dir):
    path = str(fixtures_dir / "test_waagent.conf")
    conf = load(path, report=False)
    reported = {(p.line, p.key) for p in conf.problems}
    assert reported == {(6, ""), (7, "FauxKey1"), (8, "FauxKey2"), (9, "FauxKey3")}
    assert all(p.path == path for p in conf.problems)


@pytest.mark.parametrize("text, key, expected", [
    ("Logs.Verbose=Y", "Logs.Verbose", True),
    ("Logs.Verbose=yes", "Logs.Verbose", False),            # only y/n count: default
    ('ResourceDisk.MountPoint="/mnt/x"', "ResourceDisk.MountPoint", "/mnt/x"),
    ("ResourceDisk.SwapSizeMB= 2048 ", "ResourceDisk.SwapSizeMB", 2048),
    ("ResourceDisk.SwapSizeMB=2g", "ResourceDisk.SwapSizeMB", 0),  # unparsable: default
    ("ResourceDisk.SwapSizeMB=-5", "ResourceDisk.SwapSizeMB", 0),  # below minimum: default
    ("Provisioning.Agent=cloud-init", "Provisioning.Agent", "cloud-init"),
    ("Provisioning.Agent=cloudinit", "Provisioning.Agent", "disabled"),
    ("HttpProxy.Host=None", "HttpProxy.Host", None),
    ("Protocol.RetryDelay=0.01", "Protocol.RetryDelay", 0.01),
    ("Protocol.RetryDelay=nan", "Protocol.RetryDelay", 1.0),
    ("ResourceDisk.SwapSizeMB=1\nResourceDisk.SwapSizeMB=2", "ResourceDisk.SwapSizeMB", 2),
    ("  Logs.Verbose = y", "Logs.Verbose", True),
    ("#Logs.Verbose=y", "Logs.Verbose", False),
])
def test_values(text, key, expected):
    assert parse(text)[key] == expected


def test_bad_values_are_problems_and_fall_back_to_the_default():
    conf = parse("Logs.Verbose=maybe\nOS.EnableFirewallPeriod=soon\nProvisioning.Agent=x\n", "f")
    assert [(p.line, p.key) for p in conf.problems] == [
        (1, "Logs.Verbose"), (2, "OS.EnableFirewallPeriod"), (3, "Provisioning.Agent")]
    assert "expected y or n" in conf.problems[0].message
    assert conf["OS.EnableFirewallPeriod"] == 300


def test_provisioning_enabled_is_honoured():
    assert parse("").provisioning_agent == "auto"
    assert parse("Provisioning.Enabled=n").provisioning_agent == "disabled"
    assert parse("Provisioning.Agent=waagent").provisioning_agent == "waagent"


def test_an_unknown_provisioning_agent_means_disabled_as_in_waagent():
    """protocol.md §3.1: any value but auto/waagent/cloud-init means no provisioning (marker
    and Ready only), never the default auto; --check-config still names it."""
    conf = parse("Provisioning.Agent=none-please\n", "f")
    assert conf.provisioning_agent == "disabled"
    assert [p.key for p in conf.problems] == ["Provisioning.Agent"]
    assert "read as disabled" in conf.problems[0].message


def test_derived_defaults():
    assert parse("Extensions.GoalStatePeriod=9").initial_goal_state_period == 9
    assert parse("AutoUpdate.Enabled=n").update_to_latest_version is False


def test_missing_or_huge_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "absent.conf"))
    big = tmp_path / "big.conf"
    big.write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(ConfigError, match="larger than"):
        load(str(big))


def test_unknown_key_lookup_in_code_is_a_bug():
    with pytest.raises(KeyError):
        parse("")["Logs.Verbos"]


def test_shipped_file_lists_every_key_with_its_default_and_parses_clean():
    shipped = (ROOT / "etc" / "waagent.conf").read_text()
    assert shipped == render(), "etc/waagent.conf is stale: python3 -m config render > etc/waagent.conf"
    for key in KEYS:
        assert ("\n#%s=" % key.name) in shipped
    # Uncommenting every line gives exactly the defaults, with no problem.
    uncommented = re.sub(r"(?m)^#(?=[A-Za-z][\w.]*=)", "", shipped)
    conf = parse(uncommented)
    assert conf.problems == []
    for key in KEYS:
        assert conf[key.name] == key.default, key.name


def test_seed_documented_keys_are_known(fixtures_dir):
    # Every key the waagent seed config documents (commented or not) is one we know.
    for line in (fixtures_dir / "test_waagent.conf").read_text().splitlines():
        candidate = line.lstrip("# ").split("=", 1)[0].strip()
        if "=" in line and candidate and not candidate.startswith("Faux") and " " not in candidate:
            assert candidate in BY_NAME, candidate


def test_check_command_reports_and_exits_non_zero(fixtures_dir):
    result = subprocess.run([sys.executable, "-m", "config", "check",
                             str(fixtures_dir / "test_waagent.conf")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert "test_waagent.conf:7: FauxKey1: unknown key" in result.stdout
