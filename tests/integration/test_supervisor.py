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
                                                  RESIDENT, WORKERS, pid_alive, wait_for)

USERS = {"provisioning": "guestagent-prov", "monitoring": "guestagent-mon",
         "extensions": "guestagent-ext", "logcollector": "guestagent-logs"}


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def open_fds(pid):
    d = "/proc/%d/fd" % pid
    return {int(n): os.readlink(os.path.join(d, n)) for n in os.listdir(d)}


def env_report(agent, name):
    """The `env` test hook's report of a worker's next run (or of the running one)."""
    agent.behave(name, "env")
    if name == "logcollector":
        assert agent.ctl("collect-logs").returncode == 0
    elif name == "provisioning":
        assert agent.ctl("start", "provisioning").returncode == 0

    def report():
        for line in agent.log(name).splitlines():
            if "test hook: env " in line:
                return json.loads(line.split("test hook: env ", 1)[1])
    return wait_for(report, 10, 0.05, "the env report of %s" % name)


# ---- 1. the worker table and spawning ---------------------------------------------------
@BOTH_SPAWNERS
def test_each_worker_runs_alone_under_its_own_uid_without_privileges(agent):
    wire = grp.getgrnam("guestagent-wire").gr_gid
    workers = agent.workers()
    uids = set()
    sup_pid = agent.status()["supervisor"]["pid"]
    with open("/proc/%d/cmdline" % sup_pid, "rb") as f:
        assert f.read().split(b"\0")[0] == b"guestagent: supervisor [priv]"
    assert proc_status(sup_pid)["THP_enabled"] == "0"   # launch.no_huge_pages
    # The workers that are not resident: what they were while they ran (the env hook).
    for name in ("provisioning", "logcollector"):
        st = env_report(agent, name)["status"]
        uid = pwd.getpwnam(USERS[name]).pw_uid
        assert st["Uid"].split() == [str(uid)] * 4, name
        assert st["Gid"].split() == [str(wire)] * 4 and st["Groups"].strip() == "", name
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[cap], 16) == 0, (name, cap)
        assert st["NoNewPrivs"] == "1" and st["Umask"] == "0077", name
        assert st["THP_enabled"] == "0", name
        assert st["PPid"] == str(sup_pid), name
        uids.add(uid)
    for name in RESIDENT:
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
        # No transparent huge pages (launch.no_huge_pages, issue 17).
        assert st["THP_enabled"] == "0", name
        uids.add(uid)
        fds = open_fds(pid)
        assert sorted(fds) == [0, 1, 2, 3], (name, fds)
        assert fds[0] == "/dev/null"
        assert fds[1] == fds[2] and fds[1].startswith("pipe:")
        assert fds[3].startswith("socket:")
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            assert f.read().split(b"\0")[0] == ("guestagent: %s [unpriv]" % name).encode()
        assert st["PPid"] == str(sup_pid)
    for name in WORKERS:
        uid = pwd.getpwnam(USERS[name]).pw_uid
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
    assert all(agent.worker(n)["state"] == "RUNNING" for n in RESIDENT if n != "extensions")
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
    before = agent.worker("extensions")
    agent.behave("extensions", "@%d hang" % before["pid"])
    after = agent.wait_state("extensions", "RUNNING", pid_not=before["pid"], timeout=15)
    assert after["last_exit"].startswith("killed by SIGKILL (hung: no heartbeat for")
    assert "event=hung worker=extensions pid=%d" % before["pid"] in agent.log()
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
    assert all(agent.worker(n)["state"] == "RUNNING" for n in RESIDENT)


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
    assert re.search(r"^extensions\s+RUNNING\s+\d+\s+\d+s\s+0\s+-\s+[\d.]+ MiB\s+[\d.]+\s+-$",
                     r.stdout, re.M), r.stdout
    assert re.search(r"^spawner\s+ready\s+pid \d+ .* method zygote\s+starts 1$", r.stdout,
                     re.M), r.stdout
    assert re.search(r"^logcollector\s+STOPPED\s+-\s+-\s+0\s+in \d+m\d+s\s+-", r.stdout, re.M)
    assert "exit codes" in agent.ctl("--help").stdout
    agent.ctl("stop", "monitoring")
    assert agent.ctl("status").returncode == 6


def test_status_json_has_every_field(agent):
    data = agent.status()
    assert set(data["supervisor"]) == {"pid", "version", "uptime", "rss", "config"}
    assert data["supervisor"]["rss"] > 1024 * 1024
    lifetimes = {}
    for w in data["workers"]:
        assert set(w) == {"name", "state", "pid", "user", "uptime", "restarts", "last_exit",
                          "rss", "cpu_percent", "message", "lifetime", "next_run"}
        if w["name"] in RESIDENT:
            assert w["rss"] > 1024 * 1024 and w["cpu_percent"] is not None
        assert w["user"] == USERS[w["name"]]
        lifetimes[w["name"]] = w["lifetime"]
    assert lifetimes == {"provisioning": "once", "monitoring": "service",
                         "extensions": "service", "logcollector": "periodic"}
    sp = data["spawner"]
    assert set(sp) == {"method", "state", "pid", "starts", "uptime", "rss", "message"}
    assert (sp["method"], sp["state"], sp["starts"]) == ("zygote", "ready", 1)
    assert sp["rss"] > 1024 * 1024 and sp["message"] == ""


def test_the_running_supervisor_has_not_loaded_what_only_a_rare_verb_needs(agent):
    """Issue 17: the resident supervisor's memory. OpenSSL's libcrypto (hashlib, ~1.2 MiB PSS
    in the VM) is never mapped: the tenant certificates' thumbprints use CPython's own SHA-1
    (after an install: tests/integration/security/test_ext_certificates.py)."""
    agent.wait_all_running()
    pid = agent.status()["supervisor"]["pid"]
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read()
    assert "_hashlib" not in maps and "libcrypto" not in maps


# ---- process tree end -------------------------------------------------------------------
@BOTH_SPAWNERS
def test_sigterm_stops_the_tree_in_reverse_order_in_time(agent):
    pids = agent.pids()
    t = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(10) == 0
    elapsed = time.monotonic() - t
    assert elapsed < 4 * 3, elapsed   # within the sum of the stop timeouts (and much less)
    assert not any(pid_alive(p) for p in pids.values())
    order = re.findall(r"event=exit worker=(\w+) .*state=STOPPING", agent.log())
    assert order == list(reversed(RESIDENT))
    assert not os.path.exists(os.path.join(agent.run_dir, "control.sock"))


@BOTH_SPAWNERS
def test_kill9_of_the_supervisor_leaves_no_worker_behind(agent):
    pids = list(agent.pids().values())
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
    assert all(agent.worker(n)["state"] == "RUNNING" for n in RESIDENT)


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
    assert "STATUS=1 exited, 2 running, 1 stopped" in ready   # provisioning done
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
    try:
        # Detached: its own session, and no longer the child of what started it (its parent
        # is init, or the nearest subreaper: this test run is one, tests/run_guard.py).
        assert os.getsid(sup) != os.getsid(0)
        assert proc_status(sup)["PPid"] in ("1", str(os.getpid()))
        pids = list(agent.pids().values())
    finally:
        os.kill(sup, signal.SIGTERM)   # the harness does not know a detached supervisor
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
SMALL_LOGS = {"Agent.LogMaxBytes": "4096"}


def test_log_lines_land_in_the_right_file_rotate_and_reach_the_journal(make_agent):
    agent = make_agent(SMALL_LOGS).start()
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


def test_agentctl_logs_follow_sees_new_lines_across_rotation(make_agent):
    agent = make_agent(SMALL_LOGS).start()
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
    wait_for(lambda: "***REDACTED***" in agent.log("extensions"), 5, 0.05, "the secret line")
    for text in (agent.log("extensions"), agent.stderr()):
        assert "TOPSECRET" not in text
    line = next(l for l in agent.log("extensions").splitlines() if "***REDACTED***" in l)
    assert '"protectedSettings": "***REDACTED***"' in line and "sig=***REDACTED***" in line


def test_verbose_and_console_switches(make_agent):
    agent = make_agent({"Logs.Console": "n"}).start()
    os.kill(agent.worker("monitoring")["pid"], signal.SIGKILL)
    agent.wait_state("monitoring", "RUNNING")
    assert "<6>" not in agent.stderr()          # Logs.Console=n: nothing but errors
    assert "event=spawn" in agent.log()          # the files still have everything
    verbose = make_agent({"Logs.Verbose": "y"}).start()
    assert re.search(r"DEBUG monitoring\[\d+\]: heartbeat every 0.20s", verbose.log("monitoring"))
    assert "DEBUG monitoring[" not in agent.log("monitoring")


# ---- 7. lifetimes: once per boot, periodic ----------------------------------------------
def test_provisioning_exits_0_is_not_restarted_and_status_says_why(make_agent, tmp_path):
    # A provisioning that really succeeded: Provisioning.Agent=disabled (marker and Ready
    # only) against the emulator, which records the Ready. Against no platform, "Ready not
    # reported" is not a success to call healthy.
    from emulator.confinement import Emulator
    emu = Emulator()
    try:
        lib = tmp_path / "lib"
        lib.mkdir()
        agent = make_agent(dict(emu.conf(), **{"Lib.Dir": str(lib)})).start()
        _provisioning_exits_0_is_not_restarted_and_status_says_why(agent, emu)
    finally:
        emu.stop()


def _provisioning_exits_0_is_not_restarted_and_status_says_why(agent, emu):
    w = agent.wait_state("provisioning", "EXITED", timeout=30)
    assert (w["state"], w["pid"], w["last_exit"], w["restarts"]) == ("EXITED", None, "exit 0", 0)
    assert w["lifetime"] == "once" and w["next_run"] is None
    assert w["message"] == "provisioning: disabled; Ready reported"
    assert [r["document"]["state"] for r in emu.health()] == ["Ready"]
    time.sleep(1.0)   # many backoff delays: a clean exit is not restarted
    assert agent.log().count("event=spawn worker=provisioning") == 1
    assert agent.worker("provisioning")["state"] == "EXITED"
    r = agent.ctl("status")
    assert r.returncode == 0, r.stdout   # EXITED with exit 0 is where provisioning should be
    assert re.search(r"^provisioning\s+EXITED\s+-\s+-\s+0\s+-\s+-\s+-\s+exit 0$", r.stdout, re.M)
    assert "\n  provisioning: disabled; Ready reported\n" in r.stdout
    # agentctl start runs it again: provisioning is over this boot, it says so and exits 0.
    r = agent.ctl("start", "provisioning")
    assert r.returncode == 0, r.stderr
    w = agent.wait_state("provisioning", "EXITED")
    assert w["message"] == "provisioning: already finished this boot"
    assert w["last_exit"] == "exit 0" and w["restarts"] == 0
    assert "event=security" not in agent.log()


def test_a_failing_once_worker_backs_off_then_goes_fatal_with_the_reason(make_agent):
    # Crashes before ready every time: retried after at least Agent.BackoffDelay each time
    # (never at once, as a service is), then FATAL; no hourly retry for a once-per-boot job.
    agent = make_agent({"Agent.BackoffDelay": "0.3", "Agent.FlapMaxFailures": "3"})
    agent.behave("provisioning", "crash")
    agent.start(wait=False)
    wait_for(agent.socket_up, 20, 0.05, "the control socket")
    fatal = agent.wait_state("provisioning", "FATAL", timeout=20)
    assert fatal["last_exit"] == "exit 3" and fatal["restarts"] == 2
    log = agent.log()
    spawns = re.findall(r"^(\S+) INFO supervisor\[\d+\]: event=spawn worker=provisioning", log,
                        re.M)
    assert len(spawns) == 3
    assert re.findall(r"event=backoff worker=provisioning delay=([\d.]+)s", log) == ["0.30",
                                                                                     "0.30"]
    assert "event=fatal worker=provisioning failures=3" in log and "retry_in=never" in log
    r = agent.ctl("status")
    assert r.returncode == 6 and re.search(r"^provisioning\s+FATAL\s.*exit 3$", r.stdout, re.M)
    # The resident workers started anyway (Agent.StartAfterProvisioning: when it ended).
    assert all(agent.worker(n)["state"] == "RUNNING" for n in RESIDENT)
    time.sleep(1.0)
    assert agent.log().count("event=spawn worker=provisioning") == 3
    agent.calm("provisioning")
    r = agent.ctl("start", "provisioning")
    assert r.returncode == 0, r.stderr
    assert agent.wait_state("provisioning", "EXITED")["last_exit"] == "exit 0"


def test_logcollector_runs_on_its_period_and_is_not_resident_in_between(make_agent):
    # The initial delay leaves room for a loaded machine to finish start() before the first run.
    agent = make_agent({"Debug.LogCollectorInitialDelay": "4", "Logs.CollectPeriod": "2"})
    agent.start()
    started = time.monotonic()
    w = agent.worker("logcollector")
    assert w["state"] == "STOPPED" and w["pid"] is None and 0 < w["next_run"] <= 4
    wait_for(lambda: agent.log().count("event=run_done worker=logcollector") >= 2, 20, 0.05,
             "two runs")
    elapsed = time.monotonic() - started
    assert elapsed >= 2 - 0.2, elapsed   # at least one period between the two runs
    log = agent.log()
    assert "event=run_done worker=logcollector status='exit 0' next_run_in=2s" in log
    assert agent.log().count("event=logs_manifest worker=logcollector") >= 2   # two collections
    w = agent.worker("logcollector")
    # Between runs: no process, and the next run is announced.
    assert w["state"] == "EXITED" and w["pid"] is None and w["last_exit"] == "exit 0"
    assert w["restarts"] == 0 and 0 < w["next_run"] <= 2
    r = agent.ctl("status")
    assert r.returncode == 0 and re.search(r"^logcollector\s+EXITED\s+-\s+-\s+0\s+in [012]s", r.stdout,
                                           re.M), r.stdout


def test_collect_logs_runs_it_now_and_waits_root_only(make_agent, test_users):
    agent = make_agent({"Logs.Collect": "n", "Debug.LogCollectorInitialDelay": "0"}).start()
    time.sleep(0.5)
    w = agent.worker("logcollector")
    assert w["state"] == "STOPPED" and w["next_run"] is None   # Logs.Collect=n: no timer
    assert "event=spawn worker=logcollector" not in agent.log()
    r = agent.ctl("collect-logs")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("bundle: %s/logcollector/logs.zip (" % agent.state_dir), r.stdout
    assert agent.log().count("event=spawn worker=logcollector") == 1
    assert agent.worker("logcollector")["pid"] is None   # returned when the run had exited
    r = agent.ctl("collect-logs", user="ga-it-admin")
    assert r.returncode == 4 and "refused" in r.stderr
    # A failed run is reported as such, and waits for the next run (no restart).
    agent.behave("logcollector", "crash")
    r = agent.ctl("collect-logs")
    assert r.returncode == 1 and "logcollector failed: exit 3" in r.stderr, r
    w = agent.worker("logcollector")
    assert (w["state"], w["last_exit"]) == ("EXITED", "exit 3")
    assert "event=run_failed worker=logcollector status='exit 3' next_run_in=never" in agent.log()
    assert agent.ctl("status").returncode == 6
    # start and stop work for it too.
    agent.calm("logcollector")
    assert agent.ctl("start", "logcollector").returncode == 0
    assert agent.wait_state("logcollector", "EXITED")["last_exit"] == "exit 0"
    assert agent.ctl("stop", "logcollector").stdout == "logcollector: STOPPED\n"


def test_waagent_collect_logs_asks_the_supervisor(make_agent):
    # waagent's verb, as scripts and support tooling call it, runs the same collector run.
    agent = make_agent({"Logs.Collect": "n"}).start()
    waagent = os.path.join(os.path.dirname(AGENTCTL), "waagent")
    r = subprocess.run([waagent, "-collect-logs", "-full", "-configuration-path:" + agent.conf],
                       capture_output=True, text=True, timeout=120)
    # It ran and ends with the bundle's path (issue 15).
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("bundle: %s/logcollector/logs.zip (" % agent.state_dir), r.stdout
    assert agent.log().count("event=spawn worker=logcollector") == 1
