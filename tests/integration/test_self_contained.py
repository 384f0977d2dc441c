"""A clone alone runs the suite: every fixture is in tests/data, and nothing refers to a folder
beside the checkout. The suites that read fixtures run here in a private mount namespace where
a `shared` folder beside the checkout (or beside its parent, where worktrees sit) is covered by
an empty tmpfs, as on a machine that has only the clone."""

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.relpath(os.path.abspath(__file__), ROOT)
# Every test file that reads tests/data/walinuxagent (directly or through the emulator).
FIXTURE_SUITES = ["tests/unit/platform", "tests/unit/provisioning/test_ovf.py",
                  "tests/unit/test_config.py", "tests/unit/test_waagent_cli.py",
                  "tests/contract/test_emulator_replay.py",
                  "tests/contract/test_emulator_documents.py",
                  "tests/contract/test_emulator_media.py"]
# The folders beside the checkout are this machine's, never the clone's: a tracked file that
# names one by a relative path (`../<name>`) would not run from a clone alone.
BESIDE_NAMES = sorted(n for n in os.listdir(os.path.dirname(ROOT))
                      if os.path.isdir(os.path.join(os.path.dirname(ROOT), n))
                      and os.path.join(os.path.dirname(ROOT), n) != ROOT)
BESIDE = re.compile(r"\.\./(%s)/([\w.-]+)" % "|".join(map(re.escape, BESIDE_NAMES))
                    if BESIDE_NAMES else r"(?!)")


def _refers_beside(line):
    """A `../<folder>/<name>` whose <name> is there beside the checkout: a real reference (a
    clone in /tmp has arbitrary neighbours, and a README's `../x` names none of them)."""
    parent = os.path.dirname(ROOT)
    return any(os.path.exists(os.path.join(parent, m.group(1), m.group(2)))
               for m in BESIDE.finditer(line))


def _tracked_files():
    if os.path.isdir(os.path.join(ROOT, ".git")) or os.path.isfile(os.path.join(ROOT, ".git")):
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True,
                             check=True).stdout
        return [f for f in out.decode().split("\0") if f]
    return [os.path.relpath(os.path.join(d, f), ROOT)
            for d, _, files in os.walk(ROOT) for f in files]


def test_no_tracked_file_refers_to_a_folder_beside_the_checkout():
    offenders = []
    for name in _tracked_files():
        if name == HERE:
            continue
        try:
            text = open(os.path.join(ROOT, name), encoding="utf-8").read()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if _refers_beside(line):
                offenders.append("%s:%d: %s" % (name, n, line.strip()))
    assert offenders == []


def test_fixture_suites_pass_with_the_folder_beside_the_checkout_hidden():
    if os.geteuid() != 0:
        pytest.skip("a private mount namespace needs root")
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    hide = [d for d in (os.path.join(os.path.dirname(ROOT), "shared"),
                        os.path.join(os.path.dirname(os.path.dirname(ROOT)), "shared"))
            if os.path.isdir(d)]
    script = "".join('mount -t tmpfs -o mode=0755,size=1m tmpfs "%s" && ' % d for d in hide)
    script += 'ls -A %s | wc -l && exec "$@"' % " ".join('"%s"' % d for d in hide) if hide \
        else 'echo 0 && exec "$@"'
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        *FIXTURE_SUITES], cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env=env)
    tail = p.stdout[-4000:] + p.stderr[-2000:]
    assert p.stdout.splitlines()[0] == "0", tail   # the hidden folders are empty
    assert p.returncode == 0, tail
    assert re.search(r"^\d+ passed", p.stdout.splitlines()[-1]), tail
    assert "skipped" not in p.stdout.splitlines()[-1], tail
