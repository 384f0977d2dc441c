"""What every test run promises, as pytest hooks (imported by tests/conftest.py;
`-p tests.run_guard` loads them into any other run):

* A test that cannot run here is never a silent green. Every skip in this suite is for a missing
  privilege or tool (root, a Debian package, overlayfs), so with CI set every skip fails the
  run; without CI the run ends with a summary of what was skipped and why.
* A run leaves nothing running. The pytest process is made a child subreaper
  (PR_SET_CHILD_SUBREAPER), so whatever this run starts stays below it even when its parent dies
  (a supervisor killed before its spawner and workers): the run's own processes are exactly the
  pytest process's descendants, never another run's. When the session ends, after every fixture
  has been torn down, any descendant still alive fails the run, is named and is killed.
  SIGTERM is turned into KeyboardInterrupt, so an interrupted run tears its fixtures down too.
"""

import ctypes
import os
import signal
import time

import psutil
import pytest

PR_SET_CHILD_SUBREAPER = 36
_SKIPPED = []
_LEFT = []


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _interrupted(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _interrupted)


def _reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).replace("Skipped: ", "", 1)
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    _SKIPPED.append((item.nodeid, reason))
    if in_ci():
        report.outcome = "failed"
        report.longrepr = "could not run under CI=true (a skip is a failure there): %s" % reason


def _descendants():
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _alive(procs):
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def _describe(p):
    try:
        return "pid %d user %s: %s" % (p.pid, p.username(), " ".join(p.cmdline())[:200]
                                       or p.name())
    except psutil.Error:
        return "pid %d" % p.pid


def _reap_orphans():
    # Adopted orphans that exited are zombies of this process until waited for.
    for p in psutil.Process().children():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(p.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session, exitstatus):
    # After the yield every fixture, session-scoped ones included, has been torn down.
    yield
    left = _alive(_descendants())
    if left:
        # A process being stopped right now gets a moment to finish exiting.
        time.sleep(1.0)
        left = _alive(_descendants())
    if left:
        _LEFT.extend(_describe(p) for p in left)
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=10)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _reap_orphans()


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED:
        title = "could not run (failed: CI is set)" if in_ci() else "skipped, and why"
        terminalreporter.section(title)
        by_reason = {}
        for nodeid, reason in _SKIPPED:
            by_reason.setdefault(reason, []).append(nodeid)
        for reason, nodeids in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            terminalreporter.write_line("%4d  %s" % (len(nodeids), reason))
            for nodeid in nodeids[:3]:
                terminalreporter.write_line("        %s" % nodeid)
            if len(nodeids) > 3:
                terminalreporter.write_line("        ... and %d more" % (len(nodeids) - 3))


def pytest_unconfigure(config):
    # Written here, not in the terminal summary: the leftovers are found after it is printed.
    if _LEFT:
        import sys
        print("\nrun guard: FAILED: this run left %d process(es) running (now killed):"
              % len(_LEFT), file=sys.stderr)
        for line in _LEFT:
            print("  " + line, file=sys.stderr)
