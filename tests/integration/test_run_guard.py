"""A run cannot lie (tests/run_guard.py, tests/system/conftest.py): a skip fails under CI=true and
is summed up otherwise, a process a run leaves behind fails it, and the system tests' platform
fails with the emulator's stderr when the emulator does not start. Each check runs a real pytest
in a child process (or the real emulator), as a user would."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pytest(folder, *args, env=None, user=None):
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.run_guard", "-p", "no:cacheprovider",
           "-c", os.devnull, "--rootdir", str(folder), "-q", *args]
    if user:
        cmd = ["runuser", "-u", user, "--"] + cmd
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    base["PYTHONPATH"] = ROOT
    base.update(env or {})
    return subprocess.run(cmd, cwd=str(folder), capture_output=True, text=True, timeout=120,
                          env=base)


SKIPPING = '''
import pytest

def test_needs_root():
    pytest.skip("needs root (a stand-in reason)")

def test_runs():
    assert 1 + 1 == 2
'''


def test_a_skip_fails_under_ci_and_is_summed_up_otherwise(tmp_path):
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    ci = _pytest(tmp_path, env={"CI": "true"})
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "could not run under CI=true (a skip is a failure there): needs root (a stand-in " \
           "reason)" in ci.stdout, ci.stdout
    local = _pytest(tmp_path)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "skipped, and why" in local.stdout, local.stdout
    assert "   1  needs root (a stand-in reason)" in local.stdout, local.stdout


LEAVING = '''
import subprocess

def test_leaves_a_process():
    # Double fork: the sleeper is orphaned at once, as a supervisor's workers are when it is
    # killed before them.
    subprocess.run(["sh", "-c", "sleep %s >/dev/null 2>&1 &"], check=True)
'''


def _sleepers(arg):
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if p.info["cmdline"] == ["sleep", arg]:
            out.append(p)
    return out


def test_a_process_left_running_fails_the_run_and_is_killed(tmp_path):
    # A duration no other process on this machine has: the sleeper is ours.
    arg = "%d.%06d" % (600 + os.getpid() % 100, uuid.uuid4().int % 10 ** 6)
    (tmp_path / "test_leaving.py").write_text(LEAVING % arg)
    try:
        r = _pytest(tmp_path)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "1 passed" in r.stdout
        assert "this run left 1 process(es) running (now killed)" in r.stderr, r.stderr
        assert "sleep %s" % arg in r.stderr, r.stderr
        assert _sleepers(arg) == []
    finally:
        for p in _sleepers(arg):
            p.kill()


def test_non_root_run_under_ci_fails_with_the_reason():
    """The real suite, as a user without root: the tests that need root fail under CI=true."""
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root")
    if shutil.which("runuser") is None:
        pytest.skip("runuser is not installed")
    public = tempfile.mkdtemp(prefix="guestagent-guard-")
    try:
        os.chmod(public, 0o755)
        src = os.path.join(public, "src")
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
            ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
        subprocess.run(["chmod", "-R", "a+rX", src], check=True)
        r = _pytest(src, "tests/integration/test_install.py", env={"CI": "true",
                    "PYTHONPATH": src}, user="nobody")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "could not run under CI=true (a skip is a failure there): make install needs " \
               "root" in r.stdout, r.stdout
        assert "2 failed" in r.stdout, r.stdout
    finally:
        shutil.rmtree(public)


def _system_conftest():
    spec = importlib.util.spec_from_file_location(
        "system_conftest", os.path.join(ROOT, "tests", "system", "conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_platform_that_does_not_start_fails_with_the_emulators_stderr(tmp_path):
    scenario = tmp_path / "broken.json"
    scenario.write_text('{"broken": ')
    with pytest.raises(pytest.fail.Exception) as failed:
        _system_conftest().start_emulator(scenario, tmp_path / "emulator")
    message = str(failed.value)
    assert message.startswith("the platform emulator did not start"), message
    assert "json.decoder.JSONDecodeError: Expecting value: line 1 column 12" in message, message
