"""`make deb` and the package it builds, installed for real with dpkg over an image that had a
waagent package, then removed.

The install runs as root in a private mount namespace where /usr, /etc, /opt and /var are
overlays over the host's and /run is a tmpfs (as tests/integration/test_install.py does): dpkg
checks the Depends against the host's real Debian packages, the maintainer scripts run, and
the host keeps none of it. systemd is not running there (/run is empty), so the postinst takes
its image-building path: units enabled and disabled offline, nothing started. Debian's waagent
package itself needs the network to fetch, so a stand-in with its name, its files and its
enabled walinuxagent.service is built here with dpkg-deb (tests/system installs the real one).
"""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

FORMER = {
    "DEBIAN/control": "Package: waagent\nVersion: 2.9.0.4-1\nArchitecture: all\n"
                      "Maintainer: stand-in <root@localhost>\nDescription: stand-in for "
                      "Debian's waagent package\n",
    "DEBIAN/conffiles": "/etc/waagent.conf\n/etc/init.d/walinuxagent\n",
    # As Debian's: a native unit and an init script with its rc links, and a postrm that
    # removes Lib.Dir.
    "DEBIAN/postinst": "#!/bin/sh\nmkdir -p -m 0700 /var/lib/waagent\n"
                       "update-rc.d walinuxagent defaults\n"
                       "systemctl --root=/ enable walinuxagent.service\n",
    "DEBIAN/postrm": "#!/bin/sh\n[ \"$1\" = remove ] && rm -rf /var/lib/waagent\nexit 0\n",
    "etc/waagent.conf": "Provisioning.Agent=auto\n",
    "etc/init.d/walinuxagent": "#!/bin/sh\n### BEGIN INIT INFO\n# Provides: walinuxagent\n"
                               "# Required-Start: $remote_fs\n# Required-Stop: $remote_fs\n"
                               "# Default-Start: 2 3 4 5\n# Default-Stop: 0 1 6\n"
                               "# Short-Description: former agent\n### END INIT INFO\n"
                               "exec /usr/sbin/waagent -daemon\n",
    "usr/sbin/waagent": "#!/bin/sh\necho former waagent\n",
    "lib/systemd/system/walinuxagent.service":
        "[Unit]\nDescription=former agent\n[Service]\nExecStart=/usr/sbin/waagent -daemon\n"
        "[Install]\nWantedBy=multi-user.target\n",
}

SCRIPT = r"""
set -eu
T=$1 DEB=$2 FORMER=$3
for d in usr etc opt var; do
    mkdir -p "$T/$d.upper" "$T/$d.work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$T/$d.upper,workdir=$T/$d.work" "/$d"
done
mount -t tmpfs -o mode=0755 tmpfs /run
for u in guestagent-prov guestagent-ext guestagent-mon guestagent-logs; do
    userdel "$u" 2>/dev/null || true
done
groupdel guestagent-wire 2>/dev/null || true
groupdel guestagent-admin 2>/dev/null || true
dpkg --purge guestagent >/dev/null 2>&1 || true

dpkg -i "$FORMER" > "$T/former.log" 2>&1 || { cat "$T/former.log"; exit 1; }
w=/etc/systemd/system/multi-user.target.wants
[ -L $w/walinuxagent.service ] && echo "check: former enabled"
ls /etc/rc2.d/S*walinuxagent >/dev/null 2>&1 && echo "check: former rc enabled"
# A VM the former agent provisioned.
echo 0d0c0b0a-0f0e-1110-1213-141516171819 > /var/lib/waagent/provisioned
# The image maintainer's own setting, which the package must keep.
echo "Logs.Verbose=y" >> /etc/waagent.conf

dpkg --force-confold -i "$DEB" > "$T/install.log" 2>&1 || { cat "$T/install.log"; exit 1; }
echo "check: former $(dpkg-query -W -f='${db:Status-Status}' waagent 2>/dev/null || echo gone)"
echo "check: installed $(dpkg-query -W -f='${db:Status-Status} ${Version}' guestagent)"
[ -L $w/walinuxagent.service ] || echo "check: former disabled"
ls /etc/rc2.d/S*walinuxagent >/dev/null 2>&1 || echo "check: former rc disabled"
echo "check: marker $(cat /var/lib/waagent/provisioned) $(stat -c %a /var/lib/waagent)"
[ -L $w/guestagent.service ] && echo "check: enabled $(readlink $w/guestagent.service)"
echo "check: conf $(tr '\n' ' ' < /etc/waagent.conf)"
echo "check: waagent $(/usr/sbin/waagent -version | head -1)"
echo "check: agentctl $(/usr/sbin/agentctl --help >/dev/null 2>&1 && echo runs)"
/usr/lib/guestagent/bin/guestagentd --check-config > "$T/check.log" 2>&1 && echo "check: config ok"
echo "check: private $(/usr/lib/guestagent/bin/python -I -c 'import supervisor; print(supervisor.__file__)')"
/usr/bin/python3 -I -c 'import supervisor' 2>/dev/null || echo "check: system python sees none"
for u in guestagent-prov guestagent-ext guestagent-mon guestagent-logs; do
    echo "check: user $u $(id -gn "$u")"
done
echo "check: unit $(grep ^ExecStart= /usr/lib/systemd/system/guestagent.service)"
# A worker's uid reads the code (it runs from it).
setpriv --reuid=guestagent-prov --regid=guestagent-wire --clear-groups \
    /usr/lib/guestagent/bin/python -I -c 'import workers.provisioning.job' \
    && echo "check: worker imports"

dpkg -r guestagent > "$T/remove.log" 2>&1 || { cat "$T/remove.log"; exit 1; }
echo "check: removed $(dpkg-query -W -f='${db:Status-Status}' guestagent)"
[ -e /usr/lib/guestagent ] && echo "check: left $(find /usr/lib/guestagent | head -5 | tr '\n' ' ')"
[ -e /usr/sbin/waagent ] || echo "check: waagent gone"
[ -L $w/guestagent.service ] || echo "check: unit disabled"
[ -f /etc/waagent.conf ] && echo "check: conf kept"
true
"""


def build_former(tmp_path):
    tree = tmp_path / "former"
    for rel, text in FORMER.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(0o755 if rel.startswith(("DEBIAN/post", "usr/sbin", "etc/init.d")) else 0o644)
    out = tmp_path / "waagent_2.9.0.4-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    p = subprocess.run(["make", "--no-print-directory", "deb", "DEB_DIR=%s" % out,
                        "PYTHON=/usr/bin/python3"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                         "LANG": "C.UTF-8"})
    assert p.returncode == 0, p.stdout + p.stderr
    (name,) = [n for n in os.listdir(out) if n.endswith(".deb")]
    return out / name


def dpkg_deb(*args):
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True,
                          check=True).stdout


def test_the_package_holds_what_an_image_needs_and_nothing_in_the_system_python(deb):
    files = {line.split()[5].lstrip(".") for line in dpkg_deb("-c", str(deb)).splitlines()}
    for path in ("/usr/sbin/waagent", "/usr/sbin/agentctl", "/etc/waagent.conf",
                 "/usr/lib/guestagent/pyvenv.cfg", "/usr/lib/guestagent/bin/guestagentd",
                 "/usr/lib/systemd/system/guestagent.service",
                 "/usr/lib/systemd/system/guestagent-logcollector.slice",
                 "/usr/lib/sysusers.d/guestagent.conf", "/usr/lib/tmpfiles.d/guestagent.conf"):
        assert path in files, path
    pyver = "python%d.%d" % sys.version_info[:2]
    assert "/usr/lib/guestagent/lib/%s/site-packages/supervisor/daemon.py" % pyver in files
    # Nothing where the system's python3 would import it: `supervisor` shadows nothing.
    assert not [f for f in files if "dist-packages" in f or f.startswith("/usr/lib/python3")]
    fields = dict(line.split(": ", 1) for line in
                  dpkg_deb("-f", str(deb)).splitlines() if ": " in line)
    for field in ("Conflicts", "Replaces"):
        assert "waagent" in fields[field].split(", ")
    assert fields["Provides"] == "waagent"
    depends = fields["Depends"]
    for package in ("python3-psutil", "python3-requests", "python3-cryptography",
                    "python3-asn1crypto", "python3-daemon", "python3-setproctitle",
                    "python3-defusedxml", "libcrypt1"):
        assert package in depends
    assert dpkg_deb("-f", str(deb), "Package").strip() == "guestagent"
    conffiles = subprocess.run(["sh", "-c", "dpkg-deb --ctrl-tarfile %s | tar -xO ./conffiles"
                                % deb], capture_output=True, text=True).stdout
    assert conffiles == "/etc/waagent.conf\n"
    unit = subprocess.run(["sh", "-c", "dpkg-deb --fsys-tarfile %s | tar -xO "
                           "./usr/lib/systemd/system/guestagent.service" % deb],
                          capture_output=True, text=True).stdout
    assert "ExecStart=/usr/lib/guestagent/bin/guestagentd" in unit
    assert "/opt/guestagent" not in unit


def test_dpkg_installs_it_over_a_former_waagent_and_removes_it_cleanly(deb, tmp_path):
    for tool in ("unshare", "dpkg", "useradd", "setpriv", "systemctl"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            "mkdir -p %s/u %s/w && mount -t overlay overlay -o lowerdir=/opt,"
                            "upperdir=%s/u,workdir=%s/w /opt" % ((tmp_path / "probe",) * 4)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("no overlayfs here: %s" % probe.stderr.strip())
    former = build_former(tmp_path)
    host_conf = open("/etc/waagent.conf", "rb").read() if os.path.exists(
        "/etc/waagent.conf") else None
    host_has = {p: os.path.lexists(p) for p in ("/usr/sbin/waagent", "/usr/lib/guestagent")}
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT, "sh",
                        str(tmp_path), str(deb), str(former)], capture_output=True, text=True,
                       timeout=600, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                         "LANG": "C.UTF-8"})
    assert p.returncode == 0, p.stdout + p.stderr
    checks = [line[len("check: "):] for line in p.stdout.splitlines()
              if line.startswith("check: ")]
    log = (tmp_path / "install.log").read_text()
    assert {"former enabled", "former rc enabled"} <= set(checks), checks
    # Conflicts + Replaces: dpkg removed the former package, its unit is disabled.
    assert any(c in ("former gone", "former not-installed", "former config-files")
               for c in checks), (checks, log)
    assert "former disabled" in checks, (checks, log)
    # Its init script stays (a conffile of a removed package) but can no longer start.
    assert "former rc disabled" in checks, (checks, log)
    # The former package's postrm removed Lib.Dir; the VM's provisioned marker is back.
    assert "marker 0d0c0b0a-0f0e-1110-1213-141516171819 700" in checks, (checks, log)
    assert "installed installed 0.1.0" in checks, (checks, log)
    # (/lib or /usr/lib: the same folder on a merged-/usr Debian.)
    assert any(c.startswith("enabled ") and c.endswith("/lib/systemd/system/guestagent.service")
               for c in checks), (checks, log)
    assert "conf Provisioning.Agent=auto Logs.Verbose=y " in checks, (checks, log)
    assert any(c.startswith("waagent WALinuxAgent-2.15.0.1") for c in checks), checks
    assert "agentctl runs" in checks, checks
    assert "config ok" in checks, (checks, (tmp_path / "check.log").read_text())
    assert "private /usr/lib/guestagent/lib/python%d.%d/site-packages/supervisor/__init__.py" \
        % sys.version_info[:2] in checks, checks
    assert "system python sees none" in checks, checks
    for user in ("guestagent-prov", "guestagent-ext", "guestagent-mon", "guestagent-logs"):
        assert "user %s guestagent-wire" % user in checks, (checks, log)
    assert "unit ExecStart=/usr/lib/guestagent/bin/guestagentd" in checks
    assert "worker imports" in checks, checks
    # dpkg -r: the code, the commands and the enablement go; the admin's conffile stays.
    assert "removed config-files" in checks, checks
    assert not [c for c in checks if c.startswith("left ")], checks
    assert {"waagent gone", "unit disabled", "conf kept"} <= set(checks), checks
    # The host kept none of it.
    assert {p: os.path.lexists(p) for p in host_has} == host_has
    assert (open("/etc/waagent.conf", "rb").read() if os.path.exists("/etc/waagent.conf")
            else None) == host_conf
