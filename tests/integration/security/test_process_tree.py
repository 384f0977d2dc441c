"""A worker is its whole process tree (issue 10 §5): whatever a compromised worker starts —
a child in its process group, a grandchild that calls setsid() and stays, a great-grandchild
left behind by a double fork — ends with the worker: killed for a violation, stopped by
`agentctl stop`, or orphaned by a `kill -9` of the supervisor. And a worker whose hello
speaks another protocol version is refused as a violation.

Each runs from the real worker process (its code replaced by the attack, under its own uid,
on its own channel), under both spawn methods.
"""

import os
import time

import pytest

from tests.integration.supervisor_harness import pid_alive, wait_for

BOTH = pytest.mark.parametrize("agent", ["zygote", "exec"], indirect=True)

# The descendants: C stays in the worker's process group; G1 leaves it (setsid) and stays;
# G2 leaves it, forks GG and exits, so GG is an orphan in a session of its own. All of
# them ignore SIGTERM and never exit on their own. Each writes its pid down a pipe; the
# worker reports the three live pids as "tree", then runs `after`.
TREE = """
import os, signal, time

def _stay():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(3600)

r, w = os.pipe()
if os.fork() == 0:                       # C
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:                   # G1
        os.setsid()
        os.write(w, b"%8d" % os.getpid())
        _stay()
    if os.fork() == 0:                   # G2
        os.setsid()
        if os.fork() == 0:               # GG
            os.write(w, b"%8d" % os.getpid())
            _stay()
        os._exit(0)
    os.write(w, b"%8d" % os.getpid())
    _stay()
os.close(w)
data = b""
while len(data) < 24:
    data += os.read(r, 24 - len(data))
report("tree", [int(data[i:i + 8]) for i in range(0, 24, 8)])
"""

# A worker that lives on: RUNNING, heartbeating, until it is stopped.
LIVE = """
import threading
worker.ready()
threading.Thread(target=worker._heartbeats, daemon=True).start()
while True:
    worker.tick()
    time.sleep(0.05)
"""


def launch(agent, worker, code):
    """Start `worker` with its code replaced by `code`; return its pid and its descendants
    once it has reported them (the attack keeps running: agent.attack would wait for it)."""
    agent.start_attack(worker, code)

    def tree():
        for r in agent.attack_records(worker):
            if r["key"] == "tree":
                return r
        return None
    record = wait_for(tree, 20, 0.05, "the attack on %s to build its tree" % worker)
    agent.calm(worker)
    agent.pids_seen.update(record["value"])   # the harness kills what a failed test leaves
    return record["pid"], record["value"]


def all_dead(pids, timeout=5.0):
    try:
        wait_for(lambda: not any(pid_alive(p) for p in pids), timeout, 0.05, "the tree to die")
    except Exception:
        pass
    return [p for p in pids if pid_alive(p)]


@BOTH
def test_a_violation_kills_the_workers_whole_tree(agent):
    pid, tree = launch(agent, "monitoring", TREE + """
attempt("control.stop", {"worker": "extensions"})
""")
    agent.pids_seen.add(pid)
    assert all_dead([pid]) == [], "the worker outlived its violation"
    assert "event=security worker=monitoring" in agent.log("supervisor")
    assert all_dead(tree) == [], "descendants outlived the killed worker"
    # The worker is restarted (on-failure policy) and the rest is unharmed.
    agent.wait_state("monitoring", "RUNNING", pid_not=pid)
    assert agent.worker("extensions")["state"] == "RUNNING"


@BOTH
def test_agentctl_stop_ends_the_whole_tree(agent):
    pid, tree = launch(agent, "monitoring", TREE + LIVE)
    agent.pids_seen.add(pid)
    assert all(pid_alive(p) for p in tree)
    r = agent.ctl("stop", "monitoring")
    assert r.returncode == 0, r.stderr
    assert not pid_alive(pid)
    assert all_dead(tree) == [], "descendants outlived agentctl stop"
    assert agent.worker("monitoring")["state"] == "STOPPED"


@BOTH
def test_kill9_of_the_supervisor_leaves_no_worker_descendant(agent):
    pid, tree = launch(agent, "monitoring", TREE + LIVE)
    agent.pids_seen.add(pid)
    killed = agent.proc.pid
    agent.proc.kill()
    agent.proc.wait()
    assert all_dead([pid] + tree) == [], "a worker's tree survived kill -9 of the supervisor"
    # A new supervisor starts over what the old one left, its cgroup folder included.
    agent.start()
    import cgroups
    hierarchy, own = cgroups.find_hierarchy(), cgroups.own_cgroup(str(agent.proc.pid))
    if hierarchy and own is not None:
        assert not os.path.exists("%s%s/guestagent.%d" % (hierarchy, own.rstrip("/"), killed))


def test_a_hello_with_another_protocol_version_is_a_violation(agent):
    records = agent.attack("monitoring", """# before hello
report("uid", os.getuid())
attempt("worker.hello", {"worker": "monitoring", "pid": os.getpid(), "protocol": 999})
""")
    by_key = {r["key"]: r["value"] for r in records}
    assert records[-1]["key"] == "killed", records
    assert by_key.get("worker.hello", ["closed"])[0] == "closed", by_key
    log = agent.log("supervisor")
    assert "event=security worker=monitoring" in log
    assert "protocol 999" in log, log[-2000:]
    agent.wait_state("monitoring", "RUNNING", pid_not=records[0]["pid"])
    assert agent.worker("extensions")["state"] == "RUNNING"


def test_a_cgroup_holds_each_workers_tree_when_there_is_one(agent):
    """Where a cgroup v2 hierarchy is mounted (here the hybrid one), each worker runs in a
    cgroup of its own under the supervisor's, which lists its whole tree."""
    import cgroups
    hierarchy = cgroups.find_hierarchy()
    if hierarchy is None or os.path.exists(os.path.join(hierarchy, "tasks")):
        pytest.skip("no cgroup v2 hierarchy on this host (v1 freezer: tests/unit)")
    pid, tree = launch(agent, "monitoring", TREE + LIVE)
    agent.pids_seen.add(pid)
    with open("/proc/%d/cgroup" % pid) as f:
        own = [line.split(":", 2)[2].strip() for line in f if line.startswith("0::")][0]
    assert own.endswith("/monitoring"), own
    for p in tree:
        with open("/proc/%d/cgroup" % p) as f:
            assert "0::%s\n" % own in f.read()
    r = agent.ctl("stop", "monitoring")
    assert r.returncode == 0, r.stderr
    assert all_dead(tree) == []
    time.sleep(0.2)
    assert not os.path.isdir(hierarchy + own), "the stopped worker's cgroup stays"


def test_the_reaper_is_root_with_cap_kill_alone_and_outside_every_worker_group(agent):
    """What survives the supervisor to kill the trees holds one capability, and no worker
    can reach it: root (a worker cannot signal it), its own program, no descendant of one."""
    import psutil
    sup = agent.status()["supervisor"]["pid"]
    [reaper] = [c for c in psutil.Process(sup).children()
                if c.cmdline()[:1] == ["guestagent: reaper [priv]"]]
    with open("/proc/%d/status" % reaper.pid) as f:
        st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert st["Uid"].split()[:3] == ["0", "0", "0"]
    assert int(st["CapEff"], 16) == int(st["CapBnd"], 16) == 1 << 5   # CAP_KILL
    assert st["NoNewPrivs"].strip() == "1"
    assert os.getpgid(reaper.pid) not in {w["pid"] for w in agent.workers().values() if w["pid"]}


def test_a_worker_that_closes_its_channel_and_lives_on_is_killed_with_its_tree(agent):
    """Closing its channel ends a worker's heartbeats, not its supervision: one that lives on
    past the stop timeout (3 s here) is killed with its tree, as a failure, and restarted."""
    # RUNNING, then closed before the tree is forked (a child would hold the channel open).
    pid, tree = launch(agent, "monitoring", """
import time
worker.ready()
report("closed", time.monotonic())
channel.close()
""" + TREE + """
while True:
    time.sleep(3600)
""")
    agent.pids_seen.add(pid)
    closed = [r["value"] for r in agent.attack_records("monitoring") if r["key"] == "closed"][0]
    wait_for(lambda: not pid_alive(pid), 20, 0.05, "the worker that closed its channel to die")
    lived = time.monotonic() - closed
    assert lived >= 2.5, "killed %.1fs after closing its channel: a stop's time is 3 s" % lived
    assert all_dead(tree) == [], "descendants outlived the worker"
    assert "(closed its channel)" in agent.log("supervisor"), agent.log("supervisor")[-3000:]
    w = agent.wait_state("monitoring", "RUNNING", pid_not=pid)
    assert w["restarts"] >= 1


def test_a_run_that_closes_its_channel_and_takes_its_time_to_exit_is_clean(agent):
    """A worker ends by closing its channel and exiting; its interpreter's teardown can take
    seconds in a loaded guest (CI, stop 30: `agentctl collect-logs` failed on a bundle that
    was uploaded). Within the stop timeout it is a clean run: not killed, not a failure."""
    records = agent.attack("logcollector", """
import time
report("uid", os.getuid())
worker.status("bundle uploaded")
channel.close()
time.sleep(1.8)
""", timeout=60)
    assert records[-1]["key"] == "done", records
    w = agent.wait_state("logcollector", "EXITED")
    assert w["last_exit"] == "exit 0", w
    log = agent.log("supervisor")
    assert "event=run_done worker=logcollector" in log and "run_failed" not in log, log[-2000:]
