"""The preloaded spawner (spawner/): a worker forked from it has the image a
fork+exec'd one has; the spawner is supervised; nothing outlives the supervisor."""

import grp
import json
import os
import pwd
import re
import signal
import time

import psutil

from tests.integration.supervisor_harness import RESIDENT, pid_alive, wait_for
from tests.integration.test_supervisor import USERS, open_fds, proc_status

SPAWNER_TITLE = b"guestagent: spawner [priv]"


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().split(b"\0")[0]


def spawners(sup_pid):
    """The supervisor's children that are spawners (normally one)."""
    return [c.pid for c in psutil.Process(sup_pid).children()
            if pid_alive(c.pid) and cmdline(c.pid) == SPAWNER_TITLE]


def env_reports(agent, names):
    """Ask each worker for the `env` test hook and return {name: report}."""
    for name in names:
        agent.behave(name, "env")
        if name == "logcollector":   # not resident: a run now
            assert agent.ctl("collect-logs").returncode == 0

    def collect():
        reports = {}
        for name in names:
            for line in agent.log(name).splitlines():
                if "test hook: env " in line:
                    reports[name] = json.loads(line.split("test hook: env ", 1)[1])
        return reports if len(reports) == len(names) else None
    return wait_for(collect, 10, 0.05, "env reports")


def test_a_zygote_worker_has_the_clean_image_of_an_exec_worker(make_agent):
    agent = make_agent().start()
    sup = agent.status()["supervisor"]["pid"]
    log = agent.log()
    assert "spawner=zygote" in log and "event=spawner_start pid=" in log
    for name in ("provisioning",) + RESIDENT:   # logcollector: at its first run (below)
        assert re.search(r"event=spawn worker=%s .*method=zygote" % name, log), name
    [spawner] = spawners(sup)
    st = proc_status(spawner)
    assert st["Uid"].split() == ["0"] * 4 and st["NoNewPrivs"] == "1"
    assert st["PPid"] == str(sup) and st["Umask"] == "0077"
    assert st["THP_enabled"] == "0"   # and so every worker it forks (launch.no_huge_pages)
    # The spawner holds its channel, its log pipe and /dev/null: nothing of the supervisor's.
    fds = open_fds(spawner)
    assert sorted(fds) == [0, 1, 2, 3] and fds[0] == "/dev/null", fds
    assert fds[1] == fds[2] and fds[1].startswith("pipe:") and fds[3].startswith("socket:")
    spawner_fds = set(fds.values())

    wire = grp.getgrnam("guestagent-wire").gr_gid
    workers = agent.workers()
    for name in RESIDENT:
        pid = workers[name]["pid"]
        st = proc_status(pid)
        uid = pwd.getpwnam(USERS[name]).pw_uid
        assert st["PPid"] == str(sup), name          # reparented: the supervisor reaps it
        assert st["Uid"].split() == [str(uid)] * 4 and st["Gid"].split() == [str(wire)] * 4
        assert st["Groups"].strip() == ""
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[cap], 16) == 0, (name, cap)
        assert st["NoNewPrivs"] == "1" and st["Umask"] == "0077"
        assert st["Seccomp"] == proc_status(agent.proc.pid)["Seccomp"]
        fds = open_fds(pid)
        assert sorted(fds) == [0, 1, 2, 3], (name, fds)
        assert fds[0] == "/dev/null" and fds[1] == fds[2] and fds[1].startswith("pipe:")
        assert fds[3].startswith("socket:")
        assert not (set(fds.values()) - {"/dev/null"}) & spawner_fds, name
        assert cmdline(pid) == ("guestagent: %s [unpriv]" % name).encode()
        assert os.readlink("/proc/%d/cwd" % pid) == "/"
        # Its own session, not the spawner's.
        with open("/proc/%d/stat" % pid) as f:
            assert int(f.read().rsplit(")", 1)[1].split()[3]) == pid   # session id

    reports = env_reports(agent, ["monitoring", "extensions", "logcollector"])
    for name, rep in reports.items():
        assert rep["env"] == {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "HOME": "/", "GUESTAGENT_CHANNEL_FD": "3",
            "GUESTAGENT_WORKER": name, "GUESTAGENT_CONFIG": agent.conf,
            "GUESTAGENT_LOG_LEVEL": "INFO", "GUESTAGENT_TEST_DIR": agent.test_dir}, name
        assert rep["isolated"] == 1 and rep["main"] == "workers.%s.__main__" % name
        assert rep["status"]["PPid"] == str(sup) and int(rep["status"]["CapEff"], 16) == 0
    # The log collector is fork+exec'd into its own memory and cpu cgroups (issue 15,
    # supervisor/slices.py), with the same clean image as checked above.
    assert re.search(r"event=spawn worker=logcollector .*method=(cgroup|scope)", agent.log())
    # Each worker's random state is its own.
    assert len({rep["random"] for rep in reports.values()}) == len(reports)


def test_the_exec_method_has_no_spawner_and_the_same_environment(make_agent):
    agent = make_agent({"Agent.Spawner": "exec"}).start()
    sup = agent.status()["supervisor"]["pid"]
    assert spawners(sup) == []
    assert "spawner=exec" in agent.log() and "method=zygote" not in agent.log()
    exec_env = env_reports(agent, ["monitoring"])["monitoring"]
    zygote = make_agent().start()
    zygote_env = env_reports(zygote, ["monitoring"])["monitoring"]
    for key in ("GUESTAGENT_CONFIG", "GUESTAGENT_TEST_DIR"):   # the instances' own paths
        exec_env["env"].pop(key)
        zygote_env["env"].pop(key)
    assert exec_env["env"] == zygote_env["env"]
    assert (exec_env["isolated"], exec_env["main"]) == (zygote_env["isolated"],
                                                        zygote_env["main"])


def test_a_killed_spawner_is_not_restarted_and_restarts_go_by_exec(make_agent):
    agent = make_agent().start()
    sup = agent.status()["supervisor"]["pid"]
    [old] = spawners(sup)
    before = agent.pids()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: re.search(r"event=spawner_fallback method=exec reason='the spawner "
                               r"\(pid %d\) exited: killed by SIGKILL'" % old, agent.log()),
             5, 0.05, "the spawner's exit")
    time.sleep(1.0)   # > the hang window: nobody was blocked or killed meanwhile
    assert spawners(sup) == [] and not pid_alive(old)
    workers = agent.workers()
    assert agent.pids() == before
    assert all(workers[n]["state"] == "RUNNING" and workers[n]["restarts"] == 0
               for n in RESIDENT)
    assert agent.status()["spawner"]["state"] == "fallback"
    # A root process that died is not trusted again this run: the next restart is exec'd.
    os.kill(before["monitoring"], signal.SIGKILL)
    after = agent.wait_state("monitoring", "RUNNING", pid_not=before["monitoring"])
    assert proc_status(after["pid"])["PPid"] == str(sup)
    assert re.search(r"event=spawn worker=monitoring pid=%d .*method=exec" % after["pid"],
                     agent.log())
    assert agent.log().count("event=spawner_start") == 1


def test_kill9_of_the_supervisor_leaves_neither_spawner_nor_workers(make_agent):
    agent = make_agent().start()
    sup = agent.status()["supervisor"]["pid"]
    pids = list(agent.pids().values()) + spawners(sup)
    assert len(pids) == len(RESIDENT) + 1
    agent.proc.kill()
    agent.proc.wait()
    wait_for(lambda: not any(pid_alive(p) for p in pids), 5, 0.05, "spawner and workers to die")


def test_a_spawner_that_cannot_start_means_fork_exec_with_a_log_line(make_agent):
    agent = make_agent()
    agent.behave("spawner", "crash")
    agent.start()
    log = agent.log()
    assert "event=spawner_fallback method=exec reason='the spawner did not start" in log
    assert "test hook: crashing at start" in agent.log("spawner")
    for name in ("provisioning",) + RESIDENT:
        assert re.search(r"event=spawn worker=%s .*method=exec" % name, log), name
    assert spawners(agent.status()["supervisor"]["pid"]) == []
    # Supervision as usual.
    pid = agent.worker("extensions")["pid"]
    os.kill(pid, signal.SIGKILL)
    agent.wait_state("extensions", "RUNNING", pid_not=pid)


def test_sigterm_stops_the_spawner_too(make_agent):
    agent = make_agent().start()
    [spawner] = spawners(agent.status()["supervisor"]["pid"])
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(10) == 0
    assert not pid_alive(spawner)
    assert "event=spawner_fallback" not in agent.log()   # asked to leave, not died


def test_the_spawner_keeps_only_setuid_setgid_setpcap(make_agent):
    agent = make_agent().start()
    status = agent.status()
    [spawner] = spawners(status["supervisor"]["pid"])
    assert status["spawner"]["pid"] == spawner and status["spawner"]["state"] == "ready"
    st = proc_status(spawner)
    keep = (1 << 6) | (1 << 7) | (1 << 8)   # CAP_SETGID, CAP_SETUID, CAP_SETPCAP
    assert int(st["CapEff"], 16) == keep and int(st["CapPrm"], 16) == keep
    assert int(st["CapBnd"], 16) == keep
    assert int(st["CapInh"], 16) == 0 and int(st["CapAmb"], 16) == 0
    assert st["Uid"].split() == ["0"] * 4 and st["NoNewPrivs"] == "1"
    # Enough to make workers (each drops even those three).
    pid = agent.worker("monitoring")["pid"]
    os.kill(pid, signal.SIGKILL)
    new = agent.wait_state("monitoring", "RUNNING", pid_not=pid)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(proc_status(new["pid"])[cap], 16) == 0, cap
    r = agent.ctl("status")
    assert re.search(r"^spawner\s+ready\s+pid %d " % spawner, r.stdout, re.M), r.stdout


def test_the_spawner_leaves_once_the_boots_workers_run_and_restarts_go_by_exec(make_agent):
    """A root process that only waits for a crash holds its private pages for the life of the
    VM (issue 17): once the boot's workers run and it has had nothing to start for
    Agent.SpawnerRetireAfter seconds, it leaves; a later restart is fork+exec'd."""
    agent = make_agent({"Agent.SpawnerRetireAfter": "1"}).start()
    sup = agent.status()["supervisor"]["pid"]
    [spawner] = spawners(sup)
    before = agent.pids()
    wait_for(lambda: "event=spawner_retired pid=%d" % spawner in agent.log(), 10, 0.05,
             "the spawner retired")
    wait_for(lambda: not pid_alive(spawner), 5, 0.05, "the spawner gone")
    status = agent.status()
    assert (status["spawner"]["state"], status["spawner"]["pid"]) == ("retired", None)
    assert re.search(r"^spawner\s+retired\s", agent.ctl("status").stdout, re.M)
    assert agent.pids() == before   # what it made keeps running
    assert "event=spawner_fallback" not in agent.log()   # asked to leave, not died
    os.kill(before["monitoring"], signal.SIGKILL)
    after = agent.wait_state("monitoring", "RUNNING", pid_not=before["monitoring"])
    assert re.search(r"event=spawn worker=monitoring pid=%d .*method=exec" % after["pid"],
                     agent.log())
    time.sleep(1.5)
    assert spawners(sup) == [] and agent.log().count("event=spawner_start") == 1


def test_the_spawner_stays_while_a_worker_waits_to_start(make_agent):
    """The resident workers wait for provisioning (here: one that hangs) before they start:
    the spawner idle meanwhile stays for them, and they are forked from it."""
    agent = make_agent({"Agent.SpawnerRetireAfter": "0.5",
                        "Agent.StartAfterProvisioning": "3"})
    agent.behave("provisioning", "hang")
    agent.start(wait=False)
    wait_for(lambda: "event=spawner_start" in agent.log(), 15, 0.05, "the spawner")
    spawner = agent.status()["spawner"]["pid"]
    assert cmdline(spawner) == SPAWNER_TITLE
    for name in RESIDENT:
        agent.wait_state(name, "RUNNING", timeout=15)
    log = agent.log()
    assert "event=spawner_retired" not in log.split("event=spawn worker=%s" % RESIDENT[0])[0]
    for name in RESIDENT:
        assert re.search(r"event=spawn worker=%s .*method=zygote" % name, log), name
    wait_for(lambda: not pid_alive(spawner), 10, 0.05, "the spawner retired afterwards")
