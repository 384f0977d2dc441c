"""Limits nobody can exhaust on the control socket, and a verb flood from a worker.

The control socket admits root and guestagent-admin (read-only verbs). A member of the admin
group is less trusted than root: whatever it does with its connections, root still gets one;
replies it never reads do not pile up in the supervisor (descriptors, memory); a supervisor
out of descriptors does not spin on accept. A worker that floods the channel with an ungated
verb is ended as a security event, the others run on.
"""

import json
import os
import pwd
import resource
import socket
import struct
import subprocess
import sys
import time

import pytest

from tests.integration.supervisor_harness import wait_for

ADMIN = "ga-it-admin"


@pytest.fixture(scope="module")
def admin_user(accounts):
    """A member of guestagent-admin (made here if the host has none; removed after)."""
    made = False
    try:
        pwd.getpwnam(ADMIN)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", "--groups", "guestagent-admin", ADMIN], check=True)
        made = True
    yield ADMIN
    if made:
        subprocess.run(["userdel", ADMIN], check=False)


def as_admin():
    pw = pwd.getpwnam(ADMIN)
    return dict(user=pw.pw_uid, group=pw.pw_gid,
                extra_groups=os.getgrouplist(ADMIN, pw.pw_gid))


def sup_pid(agent):
    return agent.status()["supervisor"]["pid"]


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def frame(ident, verb, args=None):
    body = json.dumps({"v": 1, "id": ident, "verb": verb, "args": args or {}}).encode()
    return struct.pack(">I", len(body)) + body


# A client that opens as many connections as it can and holds them (run as the admin).
HOLDER = r"""
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(sys.argv[1])
    except OSError:
        s.close()
        continue
    held.append(s)
print(len(held), flush=True)
time.sleep(600)
"""

# A client that sends requests on several connections and never reads a reply.
NO_READER = r"""
import json, socket, struct, sys, time
path, verb, conns, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
args = {"worker": "monitoring"} if verb == "control.logs" else {}
held, sent = [], 0
for c in range(conns):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(path)
    except OSError:
        continue
    held.append(s)
    for i in range(count):
        body = json.dumps({"v": 1, "id": i + 1, "verb": verb, "args": args}).encode()
        try:
            s.sendall(struct.pack(">I", len(body)) + body)
        except OSError:     # closed by the supervisor, or its buffer is full: next one
            break
        sent += 1
print(sent, flush=True)
time.sleep(600)
"""


def client(script, *argv, admin=True):
    return subprocess.Popen([sys.executable, "-c", script] + [str(a) for a in argv],
                            stdout=subprocess.PIPE, text=True,
                            **(as_admin() if admin else {}))


def finish(proc):
    proc.kill()
    proc.wait()
    proc.stdout.close()


def sock_path(agent):
    return os.path.join(agent.run_dir, "control.sock")


def test_root_gets_a_control_connection_while_an_admin_holds_every_one_it_can(agent, admin_user):
    holder = client(HOLDER, sock_path(agent), 200)
    try:
        held = int(holder.stdout.readline())
        assert held > 0
        time.sleep(0.5)     # the supervisor has accepted (or refused) them all
        r = agent.ctl("status", timeout=20)
        assert r.returncode == 0 and "RUNNING" in r.stdout, (held, r.stdout, r.stderr)
        # The admin keeps what a fair share allows: its own status still works too, or is
        # refused as busy, never hanging.
        r = agent.ctl("version", user=admin_user, timeout=20)
        assert r.returncode in (0, 1, 3), r
        # Refused connections are logged, but not one line each: no log flood.
        assert agent.log().count("event=control_refused") <= 2, held
    finally:
        finish(holder)
    # Once it lets go, the admin is served again.
    wait_for(lambda: agent.ctl("status", user=admin_user).returncode == 0, 10,
             what="admin served after the holder left")


@pytest.mark.parametrize("verb", ["control.logs", "control.status"])
def test_unread_replies_neither_exhaust_fds_nor_grow_memory(agent, admin_user, verb):
    pid = sup_pid(agent)
    fds0, rss0 = fd_count(pid), rss(pid)
    flood = client(NO_READER, sock_path(agent), verb, 40, 3000)
    try:
        sent = int(flood.stdout.readline())
        assert sent > 0
        time.sleep(1.0)
        fds1, rss1 = fd_count(pid), rss(pid)
        # A bounded queue per connection, and a bounded number of connections.
        assert fds1 - fds0 < 150, (fds0, fds1, sent)
        assert rss1 - rss0 < 12 * 1024 * 1024, (rss0, rss1, sent)
        r = agent.ctl("status", timeout=20)
        assert r.returncode == 0, r
    finally:
        finish(flood)
    # Every descriptor comes back when the client goes.
    wait_for(lambda: fd_count(pid) <= fds0 + 2, 10, what="fds back to %d" % fds0)


def test_a_supervisor_out_of_fds_does_not_spin_on_accept_and_recovers(agent):
    pid = sup_pid(agent)
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    fds = sorted(int(f) for f in os.listdir("/proc/%d/fd" % pid))
    # No free descriptor below the limit: the next accept fails with EMFILE.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (fds[-1] + 1, hard))
    waiting = []
    try:
        for _ in range(len(fds) + 8):   # fills any hole, then waits in the backlog
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(1.0)
            try:
                s.connect(sock_path(agent))
            except OSError:
                s.close()
                break
            waiting.append(s)
        time.sleep(0.5)
        cpu0 = cpu_seconds(pid)
        time.sleep(3.0)
        used = cpu_seconds(pid) - cpu0
        assert used < 0.5, "the supervisor used %.2fs of CPU in 3s" % used
        log = agent.log()
        assert log.count("event=control_accept") <= 3, log[-2000:]
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        for s in waiting:
            s.close()
    wait_for(lambda: agent.ctl("status").returncode == 0, 10, what="status after recovery")
    for name in ("monitoring", "extensions"):
        assert agent.worker(name)["state"] == "RUNNING"


def test_supervisor_started_with_the_default_fd_limit_raises_its_own(make_agent):
    """Without systemd's LimitNOFILE=, a soft limit of 1024 is what a supervisor inherits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 8192:
        pytest.skip("this host's hard limit is %d" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        agent = make_agent().start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    got, _ = resource.prlimit(sup_pid(agent), resource.RLIMIT_NOFILE)
    assert got >= 8192, got


@pytest.mark.parametrize("worker,verb,notice", [
    ("monitoring", "worker.status", True),
    ("provisioning", "provisioning.state", False),
])
def test_a_verb_flood_ends_the_worker_as_a_violation(agent, worker, verb, notice):
    before = {n: agent.worker(n)["pid"] for n in ("monitoring", "extensions")}
    if notice:
        send = "channel.notify(%r, {'message': 'x'})" % verb
    else:
        send = "attempt(%r, {})" % verb
    records = agent.attack(worker, """
report("uid", os.getuid())
import time
t = time.monotonic()
n = 0
while time.monotonic() - t < 10:
    %s
    n += 1
report("sent", n)
""" % send, timeout=40)
    keys = [r["key"] for r in records]
    assert keys[-1] == "killed", records[-3:]
    log = agent.log()
    assert "event=security worker=%s" % worker in log and "FLOOD" in log, log[-2000:]
    # The others ran on, untouched.
    for name, pid in before.items():
        if name != worker:
            w = agent.worker(name)
            assert (w["state"], w["pid"]) == ("RUNNING", pid), w


def test_heartbeats_at_the_normal_pace_are_no_flood(agent):
    pid = agent.worker("monitoring")["pid"]
    time.sleep(3.0)   # the harness beats every 0.2s: 15 beats
    w = agent.worker("monitoring")
    assert (w["state"], w["pid"]) == ("RUNNING", pid)
    assert "FLOOD" not in agent.log()
