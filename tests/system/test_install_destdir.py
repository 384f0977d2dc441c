"""`make install DESTDIR=<rootfs>`, the other install path the README gives an image maintainer
(a venv at /opt/guestagent instead of the Debian package the VMs run): into the base image's
root (an overlay: the cache is not changed), checked there through chroot. No VM is booted;
the VMs run the package."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from guestvm.image import PROJECT, _run

pytestmark = pytest.mark.system

VENV = "/opt/guestagent"


# The base image's root, writable through an overlay in a mount namespace of its own (no copy
# of its 500 MB), held open by a sleeping shell: commands enter it with nsenter, files are read
# through /proc/PID/root. Ending the shell unmounts everything.
HOLD = r"""
set -e
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$2/merged"
echo mounted
exec sleep 3600
"""


class Root:
    def __init__(self, proc, merged):
        self.proc, self.merged = proc, merged

    def path(self, rel):
        return Path("/proc/%d/root%s" % (self.proc.pid, self.merged)) / rel

    def run(self, cmd, log=None, **kw):
        argv = ["nsenter", "-t", str(self.proc.pid), "-m", *cmd]
        return _run(argv, log=log, **kw) if log else subprocess.run(
            argv, capture_output=True, text=True, timeout=120, **kw)

    def chroot(self, cmd):
        return self.run(["chroot", str(self.merged), "sh", "-c", cmd])


@pytest.fixture(scope="module")
def rootfs(base_image, tmp_path_factory):
    out = tmp_path_factory.mktemp("destdir")
    for d in ("upper", "work", "merged"):
        (out / d).mkdir()
    proc = subprocess.Popen(["unshare", "-m", "sh", "-c", HOLD, "hold", str(base_image.rootfs),
                             str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "mounted"
        root = Root(proc, out / "merged")
        # A clean make: not the variables of a `make test VENV=...` that runs these tests.
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VENV",
                            "DESTDIR", "WHEEL")}
        build = out / "src"   # setuptools writes build/ into the tree: build from a copy
        shutil.copytree(PROJECT, build, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "build", "dist", "*.egg-info", ".pytest_cache"))
        root.run(["make", "-C", str(build), "--no-print-directory", "install",
                  f"DESTDIR={root.merged}", f"VENV={VENV}"], log=out / "build.log", env=env)
        yield root
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(out, ignore_errors=True)


def test_the_venv_holds_the_project_alone_and_sees_debians_libraries(rootfs):
    r = rootfs.chroot(f"{VENV}/bin/python -c 'import supervisor, sys; "
                       "print(supervisor.__file__); print(sys.prefix)'")
    assert r.returncode == 0, r
    path, prefix = r.stdout.split()
    assert path.startswith(f"{VENV}/lib/python3") and prefix == VENV, r
    r = rootfs.chroot(f"{VENV}/bin/python -c 'import cryptography, psutil, requests; "
                       "print(cryptography.__file__, psutil.__file__, requests.__file__)'")
    assert all(p.startswith("/usr/lib/python3/dist-packages/") for p in r.stdout.split()), r
    # pip installed the project alone (--no-deps): nothing else in the venv's site-packages.
    r = rootfs.chroot(f"{VENV}/bin/python -m pip list --local --format=freeze "
                       "--disable-pip-version-check")
    names = {line.split("==")[0].lower() for line in r.stdout.split()}
    assert names - {"pip", "setuptools"} == {"guestagent"}, r


def test_commands_units_users_and_config_are_in_place(rootfs):
    for exe in ("guestagentd", "agentctl", "waagent"):
        assert os.access(rootfs.path(f"opt/guestagent/bin/{exe}"), os.X_OK), exe
    assert os.readlink(rootfs.path("usr/sbin/agentctl")) == f"{VENV}/bin/agentctl"
    waagent = rootfs.path("usr/sbin/waagent").read_text()
    assert waagent.startswith(f"#!{VENV}/bin/python\n") and "@VENV@" not in waagent
    for unit in ("guestagent.service", "guestagent.slice", "guestagent-extensions.slice",
                 "guestagent-logcollector.slice"):
        assert rootfs.path("usr/lib/systemd/system/" + unit).is_file(), unit
    assert f"ExecStart={VENV}/bin/guestagentd" in \
        rootfs.path("usr/lib/systemd/system/guestagent.service").read_text()
    assert rootfs.path("etc/waagent.conf").read_text() == \
        (PROJECT / "etc/waagent.conf").read_text()
    r = rootfs.chroot("for u in guestagent-prov guestagent-ext guestagent-mon guestagent-logs;"
                       " do id -gn $u; done; getent group guestagent-admin >/dev/null && echo ok")
    assert r.stdout.split() == ["guestagent-wire"] * 4 + ["ok"], r
    r = rootfs.chroot(f"{VENV}/bin/waagent -version")
    assert r.returncode == 0 and r.stdout.startswith("WALinuxAgent-2."), r
