"""`make install` on a running system, as the README tells an image maintainer (no DESTDIR;
tests/system/test_install_destdir.py covers `make install DESTDIR=`), with and without
systemd-sysusers.

It runs for real, as root, in a private mount namespace where /usr, /etc, /opt and /var are
overlays over the host's and /run is a tmpfs: the install writes where it would on a VM and the
host keeps none of it.
"""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USERS = ("guestagent-prov", "guestagent-ext", "guestagent-mon", "guestagent-logs")

# In the namespace: overlays, the system's state before the install, `make install`, then what
# an image maintainer checks. Each check prints one "check: ..." line the test reads.
SCRIPT = r"""
set -eu
T=$1 SRC=$2 SYSUSERS=$3
for d in usr etc opt var; do
    mkdir -p "$T/$d.upper" "$T/$d.work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$T/$d.upper,workdir=$T/$d.work" "/$d"
done
mount -t tmpfs -o mode=0755 tmpfs /run
rm -rf /opt/guestagent /usr/lib/systemd/system/guestagent* /usr/sbin/waagent /usr/sbin/agentctl
if [ "$SYSUSERS" = no ]; then rm -f /usr/bin/systemd-sysusers /usr/bin/systemd-tmpfiles; fi
for u in guestagent-prov guestagent-ext guestagent-mon guestagent-logs; do
    userdel "$u" 2>/dev/null || true
done
groupdel guestagent-wire 2>/dev/null || true
groupdel guestagent-admin 2>/dev/null || true
# An image that ran waagent: its /etc/waagent.conf must survive the install.
printf 'Provisioning.Agent=disabled\nLogs.Verbose=y\n' > /etc/waagent.conf
make -C "$SRC" --no-print-directory install PYTHON=/usr/bin/python3 > "$T/install.log" 2>&1 \
    || { cat "$T/install.log"; exit 1; }
echo "check: conf $(cat /etc/waagent.conf | tr '\n' ' ')"
/opt/guestagent/bin/guestagentd --check-config > "$T/check.log" 2>&1 && echo "check: config ok"
for u in guestagent-prov guestagent-ext guestagent-mon guestagent-logs; do
    echo "check: user $u $(id -gn "$u") $(getent passwd "$u" | cut -d: -f7)"
done
getent group guestagent-admin > /dev/null && echo "check: group guestagent-admin"
echo "check: waagent $(/usr/sbin/waagent -version | head -1)"
echo "check: agentctl $(readlink /usr/sbin/agentctl)"
for f in guestagent.service guestagent.slice guestagent-extensions.slice \
         guestagent-logcollector.slice; do
    [ -f "/usr/lib/systemd/system/$f" ] && echo "check: unit $f"
done
[ -d /run/guestagent ] && echo "check: run $(stat -c '%a %U:%G' /run/guestagent)"
true
"""


def _copy_checkout(dest):
    shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))


@pytest.mark.parametrize("sysusers", ["yes", "no"])
def test_make_install_on_a_running_system(tmp_path, sysusers):
    if os.geteuid() != 0:
        pytest.skip("make install needs root")
    for tool in ("unshare", "make", "useradd"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    if sysusers == "yes" and shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is not installed")
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            "mkdir -p %s/u %s/w && mount -t overlay overlay -o lowerdir=/opt,"
                            "upperdir=%s/u,workdir=%s/w /opt" % ((tmp_path / "probe",) * 4)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("no overlayfs here: %s" % probe.stderr.strip())
    src = tmp_path / "src"
    _copy_checkout(src)
    host_before = {p: os.path.lexists(p) for p in ("/usr/sbin/waagent", "/run/guestagent")}
    host_conf = open("/etc/waagent.conf", "rb").read() if os.path.exists(
        "/etc/waagent.conf") else None
    # A clean environment: under `make test`, MAKEFLAGS would hand the outer make's VENV=
    # to this install.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT, "sh",
                        str(tmp_path), str(src), sysusers],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    checks = [line[len("check: "):] for line in p.stdout.splitlines()
              if line.startswith("check: ")]
    log = (tmp_path / "install.log").read_text()
    assert checks[0] == "conf Provisioning.Agent=disabled Logs.Verbose=y ", (checks, log)
    assert "config ok" in checks, (checks, (tmp_path / "check.log").read_text())
    for user in USERS:
        assert "user %s guestagent-wire /usr/sbin/nologin" % user in checks, (checks, log)
    assert "group guestagent-admin" in checks
    assert any(c.startswith("waagent WALinuxAgent-2.15.0.1") for c in checks), checks
    assert "agentctl /opt/guestagent/bin/agentctl" in checks
    assert sum(c.startswith("unit ") for c in checks) == 4, checks
    if sysusers == "yes":
        assert "run 750 root:guestagent-admin" in checks, (checks, log)
    else:
        # Neither systemd-sysusers nor systemd-tmpfiles: the users came from accounts.py and
        # /run/guestagent is left to the supervisor.
        assert "cli.accounts install" in log, log
        assert not any(c.startswith("run ") for c in checks), checks
    # The host kept none of it.
    assert {p: os.path.lexists(p) for p in host_before} == host_before
    assert (open("/etc/waagent.conf", "rb").read() if os.path.exists("/etc/waagent.conf")
            else None) == host_conf
