"""Keys parsed but not acted on yet (config/keys.py NOT_APPLIED): --check-config lists those a
file sets as warnings, which do not fail it; the table says exactly which keys no code reads."""

import os
import re
import subprocess
import sys

from config.keys import BY_NAME, NOT_APPLIED

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The keys issue 11 names; each must be in the table.
# (ResourceDisk.* are applied since issue 12; the hostname monitor, the SCSI timeout's period
# and OS.EnableFirewall since issue 14; Pid.File since issue 16.)
NAMED = ["OS.EnableFIPS", "OS.AllowHTTP"]


def _check(tmp_path, text):
    path = tmp_path / "waagent.conf"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "supervisor.daemon", "--check-config",
                           "--config", str(path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60), str(path)


def test_keys_not_applied_are_warnings_that_do_not_fail_the_check(tmp_path):
    r, path = _check(tmp_path, "OS.EnableFIPS=y\nLogs.Verbose=n\nOS.UpdateRdmaDriver=y\n"
                               "OS.EnableFIPS=n\n")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == ("%s:3: OS.UpdateRdmaDriver: warning: parsed but not applied: the "
                        "Network Direct driver is not installed or updated from the "
                        "distribution's packages (waagent's per-distribution RDMA handlers), and "
                        "unlike waagent this key alone does not turn the RDMA set-up on: set "
                        "OS.EnableRDMA=y" % path)
    # Once per key, at the line whose value is in effect.
    assert lines[1].startswith("%s:4: OS.EnableFIPS: warning: parsed but not applied: "
                               % path)
    assert lines[2] == "%s: no problems and 2 warning(s) (keys not applied yet)" % path
    assert "Logs.Verbose" not in r.stdout


def test_a_problem_still_fails_the_check_beside_warnings(tmp_path):
    r, path = _check(tmp_path, "OS.EnableFIPS=y\nFauxKey=1\n")
    assert r.returncode == 1
    assert "%s:2: FauxKey: unknown key" % path in r.stdout
    assert "%s:1: OS.EnableFIPS: warning: parsed but not applied" % path in r.stdout
    assert "1 problem(s) and 1 warning(s)" in r.stderr


def test_a_file_without_such_keys_has_no_warning(tmp_path):
    r, path = _check(tmp_path, "Logs.Verbose=y\nOS.HomeDir=/home\n")
    assert (r.returncode, r.stdout) == (0, "%s: no problems\n" % path)


def _read_keys():
    """Every key name written as a string literal in the code that runs the agent (with or
    without a dot: DetectScvmmEnv, EnableOverProvisioning)."""
    found = set()
    for folder in ("supervisor", "workers", "cli", "ipc", "statefiles"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(".py"):
                    text = open(os.path.join(dirpath, name)).read()
                    found.update(m for m in re.findall(r"[\"']([A-Za-z][A-Za-z.]*)[\"']", text)
                                 if m in BY_NAME)
    return found


def test_the_table_marks_exactly_the_keys_no_code_reads():
    read = _read_keys()
    assert set(NAMED) <= set(NOT_APPLIED)
    assert read & set(NOT_APPLIED) == set(), "read by the code, yet marked not applied"
    # Keys read only through config/parser.py's derived values.
    derived = {"Provisioning.Enabled", "Provisioning.Agent"}
    unmarked = set(BY_NAME) - read - derived - set(NOT_APPLIED)
    assert unmarked == set(), "no code reads these, and the table does not say so"
