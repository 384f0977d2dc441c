"""`waagent -serialconsole` (cli/serialconsole.py) on a root prefix (OS.SysRoot): the real
command line editing a copy of a Debian grub configuration."""

import os

import pytest

from cli import waagent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="waagent -serialconsole is root's")

DEFAULT_GRUB = """GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""
"""
GRUB_CFG = """### BEGIN /etc/grub.d/10_linux ###
menuentry 'Debian GNU/Linux' --class debian {
\tlinux\t/boot/vmlinuz-6.1.0-13-amd64 root=UUID=1234 ro  quiet
\tinitrd\t/boot/initrd.img-6.1.0-13-amd64
}
submenu 'Advanced options for Debian GNU/Linux' {
\tmenuentry 'Debian GNU/Linux, with Linux 6.1.0-13-amd64 (recovery mode)' {
\t\tlinux\t/boot/vmlinuz-6.1.0-13-amd64 root=UUID=1234 ro single
\t}
}
"""


def prefix(tmp_path):
    root = tmp_path / "root"
    (root / "etc/default").mkdir(parents=True)
    (root / "boot/grub").mkdir(parents=True)
    (root / "etc/default/grub").write_text(DEFAULT_GRUB)
    (root / "boot/grub/grub.cfg").write_text(GRUB_CFG)
    os.chmod(str(root / "boot/grub/grub.cfg"), 0o444)
    conf = tmp_path / "waagent.conf"
    conf.write_text("OS.SysRoot=%s\n" % root)
    return root, "-configuration-path:%s" % conf


def test_serialconsole_puts_the_kernel_console_on_ttys0_once(tmp_path, capsys):
    root, conf = prefix(tmp_path)
    assert waagent.main(["-serialconsole", conf]) == 0
    assert "console=ttyS0 earlyprintk=ttyS0 added" in capsys.readouterr().out
    assert 'GRUB_CMDLINE_LINUX="console=ttyS0 earlyprintk=ttyS0"\n' in \
        (root / "etc/default/grub").read_text()
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n' in (root / "etc/default/grub").read_text()
    cfg = (root / "boot/grub/grub.cfg").read_text()
    linux = [ln for ln in cfg.splitlines() if ln.strip().startswith("linux")]
    assert len(linux) == 2 and all(ln.endswith(" console=ttyS0 earlyprintk=ttyS0")
                                   for ln in linux), linux
    assert "\tinitrd\t/boot/initrd.img-6.1.0-13-amd64\n" in cfg
    assert os.stat(str(root / "boot/grub/grub.cfg")).st_mode & 0o777 == 0o444
    # Again: nothing changes.
    assert waagent.main(["-serialconsole", conf]) == 0
    assert "already" in capsys.readouterr().out
    assert (root / "boot/grub/grub.cfg").read_text() == cfg


def test_serialconsole_without_grub_says_so(tmp_path, capsys):
    conf = tmp_path / "waagent.conf"
    conf.write_text("OS.SysRoot=%s\n" % (tmp_path / "empty"))
    assert waagent.main(["--serialconsole", "-configuration-path:%s" % conf]) == 1
    assert "no grub configuration" in capsys.readouterr().err
