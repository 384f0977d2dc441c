"""The set-up step of `make test` and `make demo` (Makefile target `deps`, packaging/debian-deps):
on a machine that lacks a listed Debian package it installs it with apt-get, then does nothing
more; as non-root it says in one line what to do and fails.

The install runs for real, as root, in a private mount namespace (overlays over /usr, /etc and
/var, as tests/integration/test_install.py does) with no network: one listed package is removed
there with dpkg, and apt-get's only source is a local repository holding that package, rebuilt
from the host's installed files. The host keeps none of it and no packet leaves.
"""

import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Listed in packaging/debian-runtime.txt, pure Python, nothing installed depends on it.
PACKAGE = "python3-defusedxml"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

SCRIPT = r"""
set -eu
T=$1 SRC=$2 PKG=$3
for d in usr etc var; do
    mkdir -p "$T/$d.upper" "$T/$d.work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$T/$d.upper,workdir=$T/$d.work" "/$d"
done
step() { echo "== $1"; }
step "all present"
make -s -C "$SRC" deps 2>&1
step "removed"
dpkg --remove --force-depends "$PKG" > /dev/null 2>&1
dpkg-query -W -f='${db:Status-Status}\n' "$PKG" 2>&1 || true
# apt-get's only source: the local repository (no network in this namespace anyway).
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
echo "deb [trusted=yes] file:$T/repo ./" > /etc/apt/sources.list
# apt reads a file: repository as its _apt user; the test's folders are root's own.
echo 'APT::Sandbox::User "root";' > /etc/apt/apt.conf.d/99guestagent-test
step "set-up"
make -s -C "$SRC" deps 2>&1
step "after"
dpkg-query -W -f='${db:Status-Status}\n' "$PKG"
/usr/bin/python3 -c 'import defusedxml; print("import ok")'
step "again"
make -s -C "$SRC" deps 2>&1
"""


def _rebuild_deb(package, repo):
    """A .deb of the installed package from its files and control data, and a Packages index."""
    stage = repo / "stage"
    (stage / "DEBIAN").mkdir(parents=True)
    for path in subprocess.run(["dpkg", "-L", package], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        if os.path.isfile(path) and not os.path.isdir(path):
            dest = stage / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest, follow_symlinks=False)
    control = subprocess.run(["dpkg-query", "-s", package], capture_output=True, text=True,
                             check=True).stdout
    fields = [line for line in control.splitlines()
              if not line.startswith(("Status:", "Conffiles:"))]
    (stage / "DEBIAN" / "control").write_text("\n".join(fields) + "\n")
    deb = repo / ("%s.deb" % package)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(stage), str(deb)],
                   capture_output=True, check=True)
    shutil.rmtree(stage)
    data = deb.read_bytes()
    (repo / "Packages").write_text("\n".join(fields) + "\nFilename: ./%s\nSize: %d\nSHA256: %s\n\n"
                                   % (deb.name, len(data), hashlib.sha256(data).hexdigest()))


def _sections(out):
    sections, name = {}, None
    for line in out.splitlines():
        if line.startswith("== "):
            name = line[3:]
            sections[name] = []
        elif name:
            sections[name].append(line)
    return sections


def test_set_up_installs_what_is_missing_and_nothing_when_all_is_there(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the set-up step installs Debian packages: it needs root")
    for tool in ("unshare", "make", "dpkg-deb", "apt-get"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    status = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE],
                            capture_output=True, text=True).stdout
    assert status == "installed", "%s is in packaging/debian-runtime.txt" % PACKAGE
    repo = tmp_path / "repo"
    repo.mkdir()
    _rebuild_deb(PACKAGE, repo)
    p = subprocess.run(["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", SCRIPT,
                        "sh", str(tmp_path), ROOT, PACKAGE],
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert p.returncode == 0, p.stdout + p.stderr
    out = _sections(p.stdout)
    # Everything there: silent, no apt-get (there is no network in the namespace).
    assert out["all present"] == [], p.stdout
    assert out["removed"] != ["installed"], p.stdout
    assert out["set-up"][0] == "make deps: installing from Debian: %s" % PACKAGE, p.stdout
    assert out["set-up"][-1].startswith("make deps: packages installed in "), p.stdout
    assert out["after"] == ["installed", "import ok"], p.stdout
    assert out["again"] == [], p.stdout


@pytest.fixture
def public_dir():
    # nobody must reach the copy: pytest's own tmp folders are root's alone.
    d = tempfile.mkdtemp(prefix="guestagent-setup-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d)


def _copy_for_nobody(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("Makefile", "packaging", ".ci"):
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), src / name)
        else:
            shutil.copy(os.path.join(ROOT, name), src / name)
    subprocess.run(["chmod", "-R", "a+rX", str(src)], check=True)
    return src


@pytest.mark.parametrize("target", ["test", "demo"])
def test_non_root_is_told_in_one_line(public_dir, target):
    tmp_path = public_dir
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root")
    if shutil.which("runuser") is None:
        pytest.skip("runuser is not installed")
    src = _copy_for_nobody(tmp_path)
    venv = tmp_path / "venv"
    p = subprocess.run(["runuser", "-u", "nobody", "--", "make", "-C", str(src), target,
                        "VENV=%s" % venv], capture_output=True, text=True, timeout=60,
                       env=dict(ENV, CI="true"))
    assert p.returncode != 0
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert "make %s needs root: run it as root (e.g. sudo make %s)" % (target, target) in lines[0]
    assert not venv.exists()
