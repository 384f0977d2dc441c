"""ovf-env.xml parsing (protocol.md §3.2) on every recorded fixture and on bad documents."""

import re

import pytest

from workers.provisioning import ovf

FIXTURES = ["ovf-env.xml", "ovf-env-2.xml", "ovf-env-3.xml", "ovf-env-4.xml"]


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_parses(fixtures_dir, name):
    env = ovf.parse((fixtures_dir / name).read_bytes())
    assert env.hostname == "HostName" and env.username == "UserName"
    assert env.password == "UserPassword"
    assert env.disable_ssh_password_auth is False
    assert env.public_keys == (ovf.PublicKey(
        "EB0C0AB4B2D5FC35F2F0658D19F44C8283E2DD62", "/home/UserName/.ssh/authorized_keys",
        "ssh-rsa AAAANOTAREALKEY== foo@bar.local"),)
    assert env.key_pairs == (ovf.KeyPair("EB0C0AB4B2D5FC35F2F0658D19F44C8283E2DD62",
                                         "/home/UserName/.ssh/id_rsa"),)
    assert env.custom_data == "CustomData"


@pytest.mark.parametrize("name,expected", [("ovf-env.xml", False), ("ovf-env-2.xml", True),
                                           ("ovf-env-3.xml", True), ("ovf-env-4.xml", True)])
def test_only_false_disables_the_agent(fixtures_dir, name, expected):
    assert ovf.parse((fixtures_dir / name).read_bytes()).provision_guest_agent is expected


def test_password_never_in_repr(fixtures_dir):
    env = ovf.parse((fixtures_dir / "ovf-env.xml").read_bytes())
    assert "UserPassword" not in repr(env) and "CustomData" not in repr(env)


def test_home_dir_replaces_dollar_home(fixtures_dir):
    env = ovf.parse((fixtures_dir / "ovf-env.xml").read_bytes(), home_dir="/srv/home/")
    assert env.public_keys[0].path == "/srv/home/UserName/.ssh/authorized_keys"


def test_bom_is_stripped(fixtures_dir):
    data = b"\xef\xbb\xbf" + (fixtures_dir / "ovf-env-2.xml").read_bytes()
    assert ovf.parse(data).hostname == "HostName"


def _without(fixtures_dir, element):
    text = (fixtures_dir / "ovf-env-2.xml").read_text()
    start = re.search(r"<%s[ >]" % element, text).start()
    end = text.index("</%s>" % element) + len("</%s>" % element)
    return (text[:start] + text[end:]).encode()


@pytest.mark.parametrize("element", ["HostName", "UserName", "wa:ProvisionGuestAgent",
                                     "wa:PlatformSettings", "wa:PlatformSettingsSection",
                                     "LinuxProvisioningConfigurationSet"])
def test_missing_required_element(fixtures_dir, element):
    with pytest.raises(ovf.OvfError) as e:
        ovf.parse(_without(fixtures_dir, element))
    assert element.split(":")[-1] in str(e.value)


def test_optional_elements_may_be_missing(fixtures_dir):
    data = _without(fixtures_dir, "UserPassword")
    data = data.replace(b"<CustomData>CustomData</CustomData>", b"")
    env = ovf.parse(data)
    assert env.password is None and env.custom_data is None


@pytest.mark.parametrize("data", [b"", b"not xml", b"<Environment/>", b"<a><b></a>",
                                  b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
                                  b"<x>&a;</x>"])
def test_malformed(data):
    with pytest.raises(ovf.OvfError):
        ovf.parse(data)


def test_size_cap():
    with pytest.raises(ovf.OvfError, match="larger"):
        ovf.parse(b"<x>" + b"a" * ovf.MAX_OVF_BYTES + b"</x>")


def test_newer_version_only_warns(fixtures_dir, caplog):
    data = (fixtures_dir / "ovf-env-2.xml").read_bytes().replace(
        b"<wa:Version>1.0</wa:Version>", b"<wa:Version>2.0</wa:Version>", 1)
    assert ovf.parse(data).version == "2.0"
    assert "newer" in caplog.text


@pytest.mark.parametrize("body", [b"<UserPassword>p@ss&amp;word</UserPassword>",
                                  b"<wa:UserPassword>x</wa:UserPassword>",
                                  b"<UserPassword><![CDATA[a</UserPassword>b]]></UserPassword>",
                                  b"<UserPassword>multi\nline</UserPassword >"])
def test_redact(body):
    from supervisor.privileged.dvd import redact
    out = redact(b"<a>" + body + b"<b>keep</b></a>")
    assert b"p@ss" not in out and b"multi" not in out and b">x<" not in out
    assert b"]]>b" not in out and b"*" in out and b"<b>keep</b>" in out


def test_the_saved_copy_has_the_password_replaced(fixtures_dir):
    from supervisor.privileged import dvd
    saved = dvd.redact((fixtures_dir / "ovf-env.xml").read_bytes())
    assert b"<UserPassword>*</UserPassword>" in saved
    assert ovf.parse(saved).password == "*"


def test_eject_without_eject_command_uses_the_ioctl(tmp_path, monkeypatch, caplog):
    # Debian ships eject(1) apart from util-linux: a minimal image has none (as the VM's).
    # Mocked: this host has no CD-ROM to eject. The real ioctl on /dev/sr0 is asserted in
    # tests/system/test_provisioning.py (event=dvd_ejected device=/dev/sr0).
    from supervisor.privileged import dvd
    calls = []
    monkeypatch.setattr(dvd, "which", lambda name: None)
    monkeypatch.setattr(dvd.fcntl, "ioctl", lambda fd, request: calls.append(request))
    device = tmp_path / "sr0"
    device.write_bytes(b"")
    caplog.set_level("INFO")
    assert dvd.eject(str(device)) is True
    assert calls == [0x5309]
    assert "event=dvd_ejected" in caplog.text and "how=ioctl" in caplog.text


def test_eject_ioctl_failure_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    from supervisor.privileged import dvd
    monkeypatch.setattr(dvd, "which", lambda name: None)
    device = tmp_path / "not-a-cdrom"
    device.write_bytes(b"")   # a regular file: the real ioctl fails with ENOTTY
    assert dvd.eject(str(device)) is False
    assert "event=dvd_eject_failed" in caplog.text
    assert dvd.eject(str(tmp_path / "missing")) is False
