"""The supervisor as an operator meets it: real guestagentd, real workers, real users."""

import grp
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import time

import pytest

from tests.integration.supervisor_harness import (AGENTCTL, BOTH_SPAWNERS, GUESTAGENTD,
                                                  WORKERS, pid_alive, wait_for)

USERS = {"provisioning": "guestagent-prov", "monitoring": "guestagent-mon",
         "extensions": "guestagent-ext", "logcollector": "guestagent-logs"}


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def open_fds(pid):
    d = "/proc/%d/fd" % pid
    return {int(n): os.readlink(os.path.join(d, n)) for n in os.listdir(d)}


# ---- 1. the worker table and spawning ---------------------------------------------------
@BOTH_SPAWNERS
def test_each_worker_runs_alone_under_its_own_uid_without_privileges(agent):
    wire = grp.getgrnam("guestagent-wire").gr_gid
    workers = agent.workers()
    uids = set()
    sup_pid = agent.status()["supervisor"]["pid"]
    with open("/proc/%d/cmdline" % sup_pid, "rb") as f:
        assert f.read().split(b"\0")[0] == b"guestagent: supervisor [priv]"
    for name in WORKERS:
        pid = workers[name]["pid"]
        st = proc_status(pid)
        uid = pwd.getpwnam(USERS[name]).pw_uid
        assert st["Uid"].split() == [str(uid)] * 4, name
        assert st["Gid"].split() == [str(wire)] * 4, name
        assert st["Groups"].strip() == "", name
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, name
        assert int(st["CapBnd"], 16) == 0 and int(st.get("CapAmb", "0"), 16) == 0, name
        assert st["NoNewPrivs"] == "1", name
        assert st["Umask"] == "0077", name
        uids.add(uid)
        fds = open_fds(pid)
        assert sorted(fds) == [0, 1, 2, 3], (name, fds)
        assert fds[0] == "/dev/null"
        assert fds[1] == fds[2] and fds[1].startswith("pipe:")
        assert fds[3].startswith("socket:")
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            assert f.read().split(b"\0")[0] == ("guestagent: %s [unpriv]" % name).encode()
        assert st["PPid"] == str(sup_pid)
        state_dir = os.stat(os.path.join(agent.state_dir, name))
        assert (state_dir.st_uid, state_dir.st_mode & 0o777) == (uid, 0o700)
    assert len(uids) == 4


# ---- 2. supervision ---------------------------------------------------------------------
@BOTH_SPAWNERS
def test_kill9_of_a_worker_restarts_it_and_counts_it(agent):
    before = agent.worker("monitoring")
    others = {n: w["pid"] for n, w in agent.workers().items() if n != "monitoring"}
    os.kill(before["pid"], signal.SIGKILL)
    after = agent.wait_state("monitoring", "RUNNING", pid_not=before["pid"])
    assert after["restarts"] == before["restarts"] + 1
    assert after["last_exit"] == "killed by SIGKILL"
    assert {n: w["pid"] for n, w in agent.workers().items() if n != "monitoring"} == others
    assert "event=exit worker=monitoring pid=%d status='killed by SIGKILL'" % before["pid"] \
        in agent.log()


@BOTH_SPAWNERS
def test_crash_loop_goes_fatal_and_agentctl_start_revives_it(agent):
    agent.behave("extensions", "crash")
    os.kill(agent.worker("extensions")["pid"], signal.SIGKILL)
    fatal = agent.wait_state("extensions", "FATAL", timeout=20)
    assert fatal["pid"] is None and fatal["last_exit"] == "exit 3"
    time.sleep(1.0)  # FATAL stays FATAL (Agent.FatalRetryPeriod=0): no more restarts
    assert agent.worker("extensions")["restarts"] == fatal["restarts"]
    assert re.search(r"event=fatal worker=extensions failures=4 ", agent.log())
    assert all(agent.worker(n)["state"] == "RUNNING" for n in WORKERS if n != "extensions")
    # Still crashing: start fails with the reason and a non-zero exit.
    r = agent.ctl("start", "extensions")
    assert r.returncode == 1 and "exited while starting: exit 3" in r.stderr, r
    agent.wait_state("extensions", "FATAL", timeout=20)
    agent.calm("extensions")
    r = agent.ctl("start", "extensions")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("extensions: RUNNING (pid ")
    assert agent.worker("extensions")["state"] == "RUNNING"


@BOTH_SPAWNERS
def test_a_hung_worker_is_killed_and_restarted(agent):
    before = agent.worker("logcollector")
    agent.behave("logcollector", "@%d hang" % before["pid"])
    after = agent.wait_state("logcollector", "RUNNING", pid_not=before["pid"], timeout=15)
    assert after["last_exit"].startswith("killed by SIGKILL (hung: no heartbeat for")
    assert "event=hung worker=logcollector pid=%d" % before["pid"] in agent.log()
    assert not pid_alive(before["pid"])


@BOTH_SPAWNERS
def test_stop_keeps_a_worker_stopped_and_restart_returns_when_running(agent):
    r = agent.ctl("stop", "monitoring")
    assert (r.returncode, r.stdout.strip()) == (0, "monitoring: STOPPED"), r.stderr
    time.sleep(0.8)
    assert agent.worker("monitoring")["state"] == "STOPPED"
    r = agent.ctl("restart", "monitoring")
    assert r.returncode == 0 and r.stdout.startswith("monitoring: RUNNING (pid"), r.stderr
    old = agent.worker("extensions")["pid"]
    r = agent.ctl("restart", "extensions")
    assert r.returncode == 0, r.stderr
    new = agent.worker("extensions")
    assert new["state"] == "RUNNING" and new["pid"] != old
    assert "(pid %d)" % new["pid"] in r.stdout


def test_memory_soft_limit_restarts_the_worker_with_a_log_line(make_agent):
    agent = make_agent({"Agent.MemorySoftLimit": "1048576"}).start(wait=False)
    wait_for(lambda: "event=memory_limit worker=" in agent.log(), 20, 0.1, "memory_limit line")
    line = next(l for l in agent.log().splitlines() if "event=memory_limit" in l)
    assert re.search(r"rss=\d+ limit=1048576 action=restart", line)
    wait_for(lambda: any(w["restarts"] >= 1 for w in agent.workers().values()), 20, 0.2,
             "a restart for memory")


# ---- 3. the broker ----------------------------------------------------------------------
@pytest.mark.parametrize("misdeed,code", [
    ("garbage", "BAD_FRAME"),
    ("unknown-verb", "UNKNOWN_VERB"),
    ("denied-verb", "DENIED"),
    ("invalid-args", "INVALID_ARGS"),
])
def test_a_protocol_violation_ends_that_worker_only(agent, misdeed, code):
    victim = agent.worker("monitoring")
    others = {n: w["pid"] for n, w in agent.workers().items() if n != "monitoring"}
    agent.behave("monitoring", "@%d %s" % (victim["pid"], misdeed))
    after = agent.wait_state("monitoring", "RUNNING", pid_not=victim["pid"])
    assert after["last_exit"] == "killed by SIGKILL (protocol violation: %s)" % code
    assert re.search(r"event=security worker=monitoring pid=%d code=%s .*action=killed"
                     % (victim["pid"], code), agent.log())
    assert {n: w["pid"] for n, w in agent.workers().items() if n != "monitoring"} == others
    assert all(w["state"] == "RUNNING" for w in agent.workers().values())


def test_debug_verbs_are_denied_without_the_test_key(make_agent):
    agent = make_agent({"Agent.TestHooks": "n"})
    agent.behave("monitoring", "chatty 3\nslow-verb 1")  # never seen: no GUESTAGENT_TEST_DIR
    agent.start()
    time.sleep(1.0)
    assert "test_hooks=off" in agent.log()
    assert "test hook" not in agent.log("monitoring") and "debug.sleep" not in agent.log()


def test_a_verb_that_takes_60s_does_not_delay_heartbeats_or_agentctl(agent):
    pid = agent.worker("monitoring")["pid"]
    agent.behave("monitoring", "slow-verb 60")
    wait_for(lambda: "event=verb worker=monitoring verb=debug.sleep" in agent.log(), 5, 0.05,
             "the slow verb to start")
    # 4 s = 6 hang windows (0.2 s x 3 misses): the worker would be killed as hung if the
    # loop blocked on the verb; agentctl is answered at once throughout.
    latencies = []
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        t = time.monotonic()
        w = agent.worker("monitoring")
        latencies.append(time.monotonic() - t)
        assert (w["state"], w["pid"]) == ("RUNNING", pid)
        time.sleep(0.1)
    assert max(latencies) < 1.0, latencies
    assert "event=hung" not in agent.log()
    # Stopping is not held up by the verb still in flight either.
    t = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - t < 5


# ---- 6. agentctl and the control socket -------------------------------------------------
@pytest.fixture(scope="session")
def test_users(accounts):
    made = []
    for user, groups in (("ga-it-admin", ["guestagent-admin"]), ("ga-it-other", [])):
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin"] + (["--groups", ",".join(groups)] if groups
                                                    else []) + [user], check=True)
            made.append(user)
    yield
    for user in made:
        subprocess.run(["userdel", user], check=False)


def test_control_socket_admits_root_all_admin_readonly_others_nothing(agent, test_users):
    runtime = os.stat(agent.run_dir)
    assert (runtime.st_uid, runtime.st_gid, runtime.st_mode & 0o777) == (
        0, grp.getgrnam("guestagent-admin").gr_gid, 0o750)
    sock = os.stat(os.path.join(agent.run_dir, "control.sock"))
    assert sock.st_mode & 0o777 == 0o660
    r = agent.ctl("status", user="ga-it-admin")
    assert r.returncode == 0 and "RUNNING" in r.stdout, r.stderr
    assert agent.ctl("version", user="ga-it-admin").returncode == 0
    assert agent.ctl("logs", "monitoring", "-n", "1", user="ga-it-admin").returncode == 0
    pid = agent.worker("monitoring")["pid"]
    r = agent.ctl("restart", "monitoring", user="ga-it-admin")
    assert r.returncode == 4 and r.stderr.count("\n") == 1 and "refused" in r.stderr, r
    assert agent.worker("monitoring")["pid"] == pid
    assert "event=control_denied" in agent.log()
    r = agent.ctl("status", user="ga-it-other")
    assert r.returncode == 4 and r.stderr.count("\n") == 1 and "refused" in r.stderr, r
    r = agent.ctl("status", user="nobody")
    assert r.returncode == 4, r


def test_agentctl_exit_codes_for_a_stopped_daemon_and_an_unknown_worker(make_agent):
    idle = make_agent()
    r = idle.ctl("status")
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "not running" in r.stderr
    agent = idle.start()
    r = agent.ctl("status", "nosuch")
    assert r.returncode == 5 and r.stderr == "agentctl: no worker named nosuch\n"
    r = agent.ctl("restart", "nosuch")
    assert r.returncode == 5
    r = agent.ctl("version")
    assert r.returncode == 0 and r.stdout.startswith("guestagent ")
    r = agent.ctl("status")
    assert r.returncode == 0
    assert re.search(r"^extensions\s+RUNNING\s+\d+\s+\d+s\s+0\s+[\d.]+ MiB\s+[\d.]+\s+-$",
                     r.stdout, re.M), r.stdout
    assert "exit codes" in agent.ctl("--help").stdout
    agent.ctl("stop", "logcollector")
    assert agent.ctl("status").returncode == 6


def test_status_json_has_every_field(agent):
    data = agent.status()
    assert set(data["supervisor"]) == {"pid", "version", "uptime", "rss", "config"}
    for w in data["workers"]:
        assert set(w) == {"name", "state", "pid", "user", "uptime", "restarts", "last_exit",
                          "rss", "cpu_percent", "message"}
        assert w["rss"] > 1024 * 1024 and w["cpu_percent"] is not None
        assert w["user"] == USERS[w["name"]]


# ---- process tree end -------------------------------------------------------------------
@BOTH_SPAWNERS
def test_sigterm_stops_the_tree_in_reverse_order_in_time(agent):
    pids = {n: w["pid"] for n, w in agent.workers().items()}
    t = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(10) == 0
    elapsed = time.monotonic() - t
    assert elapsed < 4 * 3, elapsed   # within the sum of the stop timeouts (and much less)
    assert not any(pid_alive(p) for p in pids.values())
    order = re.findall(r"event=exit worker=(\w+) .*state=STOPPING", agent.log())
    assert order == list(reversed(WORKERS))
    assert not os.path.exists(os.path.join(agent.run_dir, "control.sock"))


@BOTH_SPAWNERS
def test_kill9_of_the_supervisor_leaves_no_worker_behind(agent):
    pids = [w["pid"] for w in agent.workers().values()]
    agent.proc.kill()
    agent.proc.wait()
    wait_for(lambda: not any(pid_alive(p) for p in pids), 5, 0.05, "workers to die")
    # A new supervisor starts over the stale socket.
    agent.start()


def test_sighup_rereads_the_config(agent):
    agent.write_conf({}, extra_lines=["Agent.NoSuchKey=1"])
    agent.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "event=reload result=ok problems=1" in agent.log(), 5, 0.05, "reload")
    assert "unknown key" in agent.log()
    assert all(w["state"] == "RUNNING" for w in agent.workers().values())


def test_sd_notify_ready_status_watchdog_stopping(make_agent):
    agent = make_agent()
    path = os.path.join(agent.dir, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    agent.start(wait=False, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    seen = []
    while not any("READY=1" in m for m in seen):
        seen.append(sock.recv(4096).decode())
    ready = next(m for m in seen if "READY=1" in m)
    assert "STATUS=4 running" in ready
    while not any("WATCHDOG=1" in m for m in seen):
        seen.append(sock.recv(4096).decode())
    agent.proc.send_signal(signal.SIGTERM)
    while not any("STOPPING=1" in m for m in seen):
        seen.append(sock.recv(4096).decode())
    sock.close()


def test_daemonize_detaches_and_serves(make_agent):
    agent = make_agent()
    r = subprocess.run([GUESTAGENTD, "--daemonize", "--config", agent.conf], timeout=20,
                       env={"PATH": "/usr/bin:/bin", "GUESTAGENT_TEST_DIR": agent.test_dir})
    assert r.returncode == 0
    agent.wait_all_running()
    sup = agent.status()["supervisor"]["pid"]
    assert proc_status(sup)["PPid"] == "1" or proc_status(sup)["PPid"] != str(os.getpid())
    pids = [w["pid"] for w in agent.workers().values()]
    os.kill(sup, signal.SIGTERM)
    wait_for(lambda: not pid_alive(sup) and not any(pid_alive(p) for p in pids), 10, 0.05,
             "the detached tree to stop")


def test_check_config_reports_every_problem_with_file_and_line(tmp_path):
    conf = tmp_path / "waagent.conf"
    conf.write_text("Logs.Verbose=y\nAgent.Bogus=1\nAgent.HeartbeatMisses=many\n")
    r = subprocess.run([GUESTAGENTD, "--check-config", "--config", str(conf)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "%s:2: Agent.Bogus: unknown key" % conf in r.stdout
    assert "%s:3: Agent.HeartbeatMisses:" % conf in r.stdout
    r = subprocess.run([GUESTAGENTD, "--check-config", "--config", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert r.returncode == 2


# ---- 5. logs ----------------------------------------------------------------------------
def test_log_lines_land_in_the_right_file_rotate_and_reach_the_journal(agent):
    agent.behave("monitoring", "chatty 150")
    wait_for(lambda: os.path.exists(os.path.join(agent.log_dir, "monitoring.log.2")), 10, 0.1,
             "rotation")
    wait_for(lambda: "chatty line 00149" in agent.log("monitoring"), 5, 0.05, "the last line")
    names = sorted(os.listdir(agent.log_dir))
    assert "monitoring.log.3" not in names   # Agent.LogBackups=2
    for name in ("monitoring.log", "monitoring.log.1", "monitoring.log.2"):
        st = os.stat(os.path.join(agent.log_dir, name))
        assert st.st_size <= 4096 and st.st_mode & 0o777 == 0o640 and st.st_uid == 0
    for other in ("provisioning", "extensions", "logcollector", "supervisor"):
        assert "chatty line" not in agent.log(other)
    last = agent.log("monitoring").splitlines()[-1]
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z INFO monitoring\[\d+\]: chatty line 00149 x+$",
                    last)
    r = agent.ctl("logs", "monitoring", "-n", "3")
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == last
    assert len(r.stdout.splitlines()) == 3
    assert re.search(r"^<6>monitoring\[\d+\]: chatty line 00149", agent.stderr(), re.M)
    assert re.search(r"^<6>supervisor: event=spawn worker=monitoring", agent.stderr(), re.M)


def test_agentctl_logs_follow_sees_new_lines_across_rotation(agent):
    f = subprocess.Popen([AGENTCTL, "--config",
                          agent.conf, "logs", "extensions", "-n", "0", "-f"],
                         stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        agent.behave("extensions", "chatty 120")
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("chatty line 00119" in l for l in seen):
            seen.append(f.stdout.readline())
        assert any("chatty line 00119" in l for l in seen)
        assert any("chatty line 00000" in l for l in seen)
    finally:
        f.terminate()
        f.wait(5)


def test_secrets_are_redacted_everywhere(agent):
    agent.behave("extensions", "secret")
    wait_for(lambda: "<redacted>" in agent.log("extensions"), 5, 0.05, "the secret line")
    for text in (agent.log("extensions"), agent.stderr()):
        assert "TOPSECRET" not in text
    line = next(l for l in agent.log("extensions").splitlines() if "<redacted>" in l)
    assert '"protectedSettings": "<redacted>"' in line and "sig=<redacted>" in line


def test_verbose_and_console_switches(make_agent):
    agent = make_agent({"Logs.Console": "n"}).start()
    os.kill(agent.worker("monitoring")["pid"], signal.SIGKILL)
    agent.wait_state("monitoring", "RUNNING")
    assert "<6>" not in agent.stderr()          # Logs.Console=n: nothing but errors
    assert "event=spawn" in agent.log()          # the files still have everything
    verbose = make_agent({"Logs.Verbose": "y"}).start()
    assert re.search(r"DEBUG monitoring\[\d+\]: heartbeat every 0.20s", verbose.log("monitoring"))
    assert "DEBUG monitoring[" not in agent.log("monitoring")
