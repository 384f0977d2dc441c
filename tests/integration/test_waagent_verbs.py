"""waagent's -provision and -run-exthandlers against the real supervisor (issue 16): each starts
the worker that does that work here (agentctl start), and says so in one line; without a
running supervisor each says that, and fails."""

import os
import subprocess

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
