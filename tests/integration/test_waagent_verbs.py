"""waagent's -provision and -run-exthandlers against the real supervisor (issue 16): each starts
the worker that does that work here (agentctl start), and says so in one line; without a
running supervisor each says that, and fails."""

import os
import signal
import subprocess

import pytest

from tests.integration.supervisor_harness import AGENTCTL, wait_for

WAAGENT = os.path.join(os.path.dirname(AGENTCTL), "waagent")


def waagent(agent, verb):
    return subprocess.run([WAAGENT, verb, "-configuration-path:" + agent.conf],
                          capture_output=True, text=True, timeout=120)


def test_provision_runs_the_provisioning_worker_again(make_agent):
    agent = make_agent().start()
    assert agent.log().count("event=spawn worker=provisioning") == 1
    r = waagent(agent, "-provision")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ("waagent: -provision: guestagentd's provisioning worker does it: "
                        "agentctl start provisioning\n")
    wait_for(lambda: agent.log().count("event=spawn worker=provisioning") == 2,
             what="provisioning spawned again")
    w = agent.wait_state("provisioning", "EXITED")
    # (No platform here: it reports that, and exits 0 as provisioning does once it is done.)
    assert w["last_exit"] == "exit 0" and w["message"].startswith("provisioning: "), w


def test_run_exthandlers_makes_sure_the_extensions_worker_runs(make_agent):
    agent = make_agent().start()
    pid = agent.worker("extensions")["pid"]
    r = waagent(agent, "-run-exthandlers")
    assert (r.returncode, r.stdout) == (0, "extensions: RUNNING (pid %d)\n" % pid), r.stderr
    assert "agentctl start extensions" in r.stderr
    # Stopped by an operator: the verb brings it back, as waagent's daemon relaunches its
    # ext-handler process.
    assert agent.ctl("stop", "extensions").returncode == 0
    r = waagent(agent, "-run-exthandlers")
    assert r.returncode == 0, r.stderr
    new = agent.worker("extensions")
    assert new["state"] == "RUNNING" and new["pid"] not in (None, pid)
    assert r.stdout == "extensions: RUNNING (pid %d)\n" % new["pid"]


def test_without_a_supervisor_they_say_so_and_fail(make_agent):
    agent = make_agent()   # configured, not started
    for verb in ("-provision", "-run-exthandlers"):
        r = waagent(agent, verb)
        assert r.returncode == 3, r
        assert "not running" in r.stderr, r.stderr


def _env(agent):
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GUESTAGENT_TEST_DIR": agent.test_dir}


def _alive(pid):
    # The detached supervisor is re-parented to the nearest subreaper, which may be this test
    # run (it reaps it here) or init (a zombie until init reaps it).
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _pid_file(agent):
    with open(os.path.join(agent.dir, "waagent.pid")) as f:
        return int(f.read())


def test_daemon_is_the_supervisor_in_the_foreground(make_agent):
    agent = make_agent()
    agent._stderr = open(agent.stderr_path, "ab")
    agent.proc = subprocess.Popen([WAAGENT, "-daemon", "-configuration-path:" + agent.conf],
                                  stdin=subprocess.DEVNULL, stdout=agent._stderr,
                                  stderr=agent._stderr, env=_env(agent))
    agent.wait_all_running()
    assert _pid_file(agent) == agent.proc.pid     # this process is the supervisor
    assert agent.stop() == 0                      # SIGTERM: a clean stop, as systemd's
    assert not os.path.exists(os.path.join(agent.dir, "waagent.pid"))


def test_start_detaches_a_supervisor_once_and_returns_when_it_answers(make_agent):
    agent = make_agent()
    r = subprocess.run([WAAGENT, "-start", "-configuration-path:" + agent.conf],
                       capture_output=True, text=True, timeout=120, env=_env(agent))
    pid = None
    try:
        assert r.returncode == 0, r.stderr
        assert agent.socket_up()
        pid = _pid_file(agent)
        with open("/proc/%d/stat" % pid) as f:   # detached: a session of its own
            assert int(f.read().rsplit(")", 1)[1].split()[3]) != os.getsid(0)
        agent.wait_all_running()
        # Again: the running supervisor answers, no second one is started.
        r = subprocess.run([WAAGENT, "-start", "-configuration-path:" + agent.conf],
                           capture_output=True, text=True, timeout=120, env=_env(agent))
        assert r.returncode == 0 and _pid_file(agent) == pid
        assert agent.log().count("event=start pid=") == 1
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not _alive(pid), 30, what="supervisor stop")
    assert not os.path.exists(os.path.join(agent.dir, "waagent.pid"))


def test_register_service_without_systemd_says_what_to_run(make_agent):
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here: the VM suite (test_boot.py) runs -register-service")
    r = subprocess.run([WAAGENT, "-register-service"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert r.stderr == ("waagent: -register-service: systemd is not running; start the agent "
                        "with `waagent -start`\n")
