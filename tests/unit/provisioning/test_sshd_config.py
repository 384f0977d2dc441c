"""waagent's sshd_config edit (protocol.md §3.4 step 9), the pure part of the broker's verb."""

from supervisor.privileged.ssh import set_options

OPTS = [("PasswordAuthentication", "no"), ("ClientAliveInterval", "180")]


def test_replaces_first_line_outside_match():
    text = "Port 22\n#PasswordAuthentication yes\npasswordauthentication yes\n" \
           "PasswordAuthentication yes\n"
    out = set_options(text, OPTS)
    assert out.splitlines() == ["Port 22", "#PasswordAuthentication yes",
                                "PasswordAuthentication no", "PasswordAuthentication yes",
                                "ClientAliveInterval 180"]


def test_inserted_before_the_first_match_block():
    text = "Port 22\nMatch User bob\n  PasswordAuthentication yes\n"
    out = set_options(text, OPTS).splitlines()
    assert out[:3] == ["Port 22", "PasswordAuthentication no", "ClientAliveInterval 180"]
    assert out[3:] == ["Match User bob", "  PasswordAuthentication yes"]


def test_match_all_ends_a_block():
    text = "Match User bob\n  X y\nMatch all\nPasswordAuthentication yes\n"
    out = set_options(text, OPTS).splitlines()
    assert "PasswordAuthentication no" in out[3:]
    assert out.index("ClientAliveInterval 180") < out.index("Match User bob")


def test_idempotent():
    once = set_options("Port 22\n", OPTS)
    assert set_options(once, OPTS) == once


DEBIAN_12 = """\
Include /etc/ssh/sshd_config.d/*.conf
KbdInteractiveAuthentication no
UsePAM yes
PasswordAuthentication yes
Subsystem sftp /usr/lib/openssh/sftp-server
Match User anoncvs
  PasswordAuthentication no
"""


def test_goes_before_a_top_level_include_so_no_drop_in_overrides_it():
    # sshd keeps the first value it reads: after the Include, a drop-in's value would win.
    out = set_options(DEBIAN_12, OPTS).splitlines()
    assert out[:3] == ["PasswordAuthentication no", "ClientAliveInterval 180",
                       "Include /etc/ssh/sshd_config.d/*.conf"]
    # The old top-level line is gone, the Match block's own line is left alone.
    assert out.count("PasswordAuthentication yes") == 0
    assert out[-2:] == ["Match User anoncvs", "  PasswordAuthentication no"]
    assert set_options("\n".join(out) + "\n", OPTS).splitlines() == out


def test_a_line_already_before_the_include_is_replaced_in_place():
    text = "PasswordAuthentication yes\nInclude /etc/ssh/sshd_config.d/*.conf\n"
    assert set_options(text, OPTS).splitlines() == [
        "PasswordAuthentication no", "ClientAliveInterval 180",
        "Include /etc/ssh/sshd_config.d/*.conf"]
