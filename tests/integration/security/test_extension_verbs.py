"""Attacks on the extensions.* verbs (issue 13): a real extensions-worker process (its code
replaced by the script, under guestagent-ext, on its own channel) asks for the worst it can;
the broker decides from its own state (the folders it extracted itself, the runs it recorded
on disk), never from what the worker says."""

import io
import os
import shutil
import stat
import time
import zipfile

import pytest

from emulator.handler_packages import build_zip
from tests.integration.supervisor_harness import pid_alive, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
GOOD = os.path.join(ROOT, "tests", "data", "extensions", "good")


@pytest.fixture
def attacked(make_agent):
    agent = make_agent()
    # Never the host's /var/log/azure: the broker writes the extension logs there.
    agent.write_conf({"Extension.LogDir": os.path.join(agent.dir, "azure"),
                      "Extensions.EnableTimeout": "10"})
    agent.start()
    return agent


def _put(agent, name, data):
    path = os.path.join(agent.test_dir, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)
    return path


def _zip(entries):
    """entries: (name, data, mode) with mode None for a file, or a ZipInfo external mode."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (mode or 0o100644) << 16
            zf.writestr(info, data)
    return buf.getvalue()


MANIFEST = open(os.path.join(GOOD, "HandlerManifest.json"), "rb").read()


def _lib(agent):
    lib = os.path.join(agent.dir, "lib")
    return sorted(os.listdir(lib)) if os.path.isdir(lib) else []


def _outcomes(records):
    return {r["key"]: r["value"] for r in records}


def test_running_what_was_never_installed_is_refused(attacked):
    records = attacked.attack("extensions", """
report("uid", os.getuid())
attempt("extensions.run", {"name": "Test.Good", "version": "1.0.0", "operation": "enable",
                           "seq": 0, "extension": None})
attempt("extensions.configure", {"name": "Test.Good", "version": "1.0.0", "extension": None,
                                 "seq": 0, "settings": '{"runtimeSettings": []}'})
attempt("extensions.read_status", {"name": "Test.Good", "version": "1.0.0", "seq": 0,
                                   "extension": None})
attempt("extensions.remove", {"name": "Test.Good", "version": "1.0.0"})
""")
    got = _outcomes(records)
    assert got["extensions.run"][:2] == ["error", "FAILED"]
    assert "not installed" in got["extensions.run"][2]
    assert got["extensions.configure"][:2] == ["error", "FAILED"]
    assert got["extensions.read_status"][:2] == ["error", "FAILED"]
    assert got["extensions.remove"] == ["ok", {"removed": False}]
    assert records[-1]["key"] == "done"


@pytest.mark.parametrize("name", ["..", "../etc", "Test.Good/../../etc", ".hidden",
                                  "Test..Good", "a/b"])
def test_dotdot_and_slashes_in_names_are_a_violation(attacked, name):
    records = attacked.attack("extensions", """
report("uid", os.getuid())
attempt("extensions.run", {"name": %r, "version": "1.0.0", "operation": "enable",
                           "seq": 0, "extension": None})
""" % name)
    # INVALID_ARGS is a violation: the worker is ended before any reply.
    assert records[-1]["key"] == "killed", records
    assert "event=security" in attacked.log("supervisor")


def test_a_command_string_is_not_an_argument(attacked):
    records = attacked.attack("extensions", """
report("uid", os.getuid())
attempt("extensions.run", {"name": "Test.Good", "version": "1.0.0", "operation": "enable",
                           "seq": 0, "extension": None, "command": "id > /tmp/pwned"})
""")
    assert records[-1]["key"] == "killed", records
    assert not os.path.exists("/tmp/pwned")


def test_a_sequence_number_already_run_is_refused_even_after_a_restart(attacked):
    package = _put(attacked, "good.zip", build_zip(GOOD))
    first = attacked.attack("extensions", """
report("uid", os.getuid())
fd = os.open(%r, os.O_RDONLY)
attempt("extensions.install", {"name": "Test.Good", "version": "1.0.0"}, fds=[fd])
attempt("extensions.configure", {"name": "Test.Good", "version": "1.0.0", "extension": None,
                                 "seq": 4, "settings": '{"runtimeSettings": [{"handlerSettings": {}}]}'})
report("install1", attempt("extensions.run", {"name": "Test.Good", "version": "1.0.0",
       "operation": "install", "seq": 4, "extension": None}))
report("enable1", attempt("extensions.run", {"name": "Test.Good", "version": "1.0.0",
       "operation": "enable", "seq": 4, "extension": None}))
report("enable2", attempt("extensions.run", {"name": "Test.Good", "version": "1.0.0",
       "operation": "enable", "seq": 4, "extension": None}))
report("install2", attempt("extensions.run", {"name": "Test.Good", "version": "1.0.0",
       "operation": "install", "seq": 5, "extension": None}))
""" % package)
    got = _outcomes(first)
    assert got["install1"][0] == "ok" and got["install1"][1]["exit_code"] == 0, got
    assert got["enable1"][0] == "ok" and got["enable1"][1]["exit_code"] == 0, got
    assert got["enable2"][:2] == ["error", "FAILED"] and "ran already" in got["enable2"][2]
    assert got["install2"][:2] == ["error", "FAILED"] and "ran already" in got["install2"][2]
    # A new worker process (as after a crash) replays the same run: the record is on disk.
    # (First let a rerun of the first script by the restarted worker, if any, end: its
    # records must not mix with the second's.)
    attacked.wait_state("extensions", "RUNNING", timeout=30)
    time.sleep(2)
    second = attacked.attack("extensions", """
report("uid", os.getuid())
report("state", attempt("extensions.state", {}))
report("replay", attempt("extensions.run", {"name": "Test.Good", "version": "1.0.0",
       "operation": "enable", "seq": 4, "extension": None}))
""")
    got = _outcomes(second)
    assert got["replay"][:2] == ["error", "FAILED"] and "ran already" in got["replay"][2]
    runs = got["state"][1]["handlers"][0]["runs"]
    assert [(r["operation"], r["seq"], r["exit_code"]) for r in runs] == [
        ("install", 4, 0), ("enable", 4, 0)]
    ops = open(os.path.join(attacked.dir, "azure", "Test.Good", "ops.log")).read()
    assert ops.count("enable seq=4") == 1 and ops.count("install seq=4") == 1, ops
    assert "uid=0 " in ops   # root: the platform's contract


def test_a_fifo_or_a_folder_as_the_package_is_refused_without_blocking(attacked):
    fifo = os.path.join(attacked.test_dir, "package.fifo")
    os.mkfifo(fifo, 0o666)
    records = attacked.attack("extensions", """
report("uid", os.getuid())
fd = os.open(%r, os.O_RDONLY | os.O_NONBLOCK)
report("fifo", attempt("extensions.install", {"name": "Test.Fifo", "version": "1.0.0"},
                       fds=[fd], timeout=10))
fd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
report("dir", attempt("extensions.install", {"name": "Test.Dir", "version": "1.0.0"},
                      fds=[fd], timeout=10))
report("none", attempt("extensions.install", {"name": "Test.None", "version": "1.0.0"},
                       timeout=10))
""" % fifo)
    got = _outcomes(records)
    for key in ("fifo", "dir"):
        assert got[key][:2] == ["error", "FAILED"], got
        assert "not a regular file" in got[key][2]
    assert got["none"][:2] == ["error", "FAILED"]
    assert _lib(attacked) == []


HOSTILE = {
    "zip-slip": [("HandlerManifest.json", MANIFEST, None), ("../../evil.sh", b"#!/bin/sh\n", None)],
    "absolute": [("HandlerManifest.json", MANIFEST, None), ("/etc/evil", b"x", None)],
    "symlink": [("HandlerManifest.json", MANIFEST, None),
                ("passwd", b"/etc/shadow", stat.S_IFLNK | 0o777)],
    "bomb": [("HandlerManifest.json", MANIFEST, None), ("zeros", b"\0" * (40 << 20), None)],
    "no-manifest": [("ext.sh", b"#!/bin/sh\n", None)],
}


def _unknown_method(data):
    """A zip whose entries name compression method 99, which zipfile does not implement (it
    raises NotImplementedError, imported with zipfile by the verb's first call)."""
    buf = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = buf.find(sig)
        while at >= 0:
            buf[at + offset:at + offset + 2] = (99).to_bytes(2, "little")
            at = buf.find(sig, at + 4)
    return bytes(buf)


HOSTILE["unknown-method"] = [("HandlerManifest.json", MANIFEST, None), ("ext.sh", b"x", None)]


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_packages_are_refused_whole_with_a_clear_reason(attacked, kind):
    data = _zip(HOSTILE[kind])
    package = _put(attacked, "hostile.zip",
                   _unknown_method(data) if kind == "unknown-method" else data)
    records = attacked.attack("extensions", """
report("uid", os.getuid())
fd = os.open(%r, os.O_RDONLY)
report("install", attempt("extensions.install", {"name": "Test.Hostile", "version": "1.0.0"},
                          fds=[fd]))
report("state", attempt("extensions.state", {}))
""" % package)
    got = _outcomes(records)
    assert got["install"][:2] == ["error", "FAILED"], got
    reason = {"zip-slip": "zip-slip", "absolute": "zip-slip", "symlink": "symlink",
              "bomb": "zip bomb", "no-manifest": "HandlerManifest.json",
              "unknown-method": "compression"}[kind]
    assert reason in got["install"][2], got["install"]
    assert got["state"][1]["handlers"] == []
    # Nothing left behind, not even a temporary folder (once a rerun of the script by the
    # restarted worker, which the harness ignores, is over too).
    wait_for(lambda: _lib(attacked) == [], 20, 0.1, "no folder left in Lib.Dir")
    assert not os.path.exists(os.path.join(attacked.dir, "evil.sh"))


def test_monitoring_may_not_call_the_extension_verbs(attacked):
    records = attacked.attack("monitoring", """
report("uid", os.getuid())
attempt("extensions.state", {})
""")
    assert records[-1]["key"] == "killed", records
    assert "event=security" in attacked.log("supervisor")


PROBE = b"""#!/bin/sh
# What the command sees of how the broker started it: its THP flag, where its output goes.
grep '^THP_enabled' /proc/self/status
echo "stdout=$(readlink /proc/$$/fd/1)"
echo "dotfiles=$(ls -A | grep '^\\.' | tr '\\n' ' ')"
"""


def test_an_extension_command_gets_nameless_output_files_and_the_kernels_huge_pages(attacked):
    # The broker itself runs without transparent huge pages (issue 17); the command a worker
    # asks for must not inherit that, nor find its output files by name in its folder.
    package = _put(attacked, "probe.zip", _zip([("HandlerManifest.json", MANIFEST, None),
                                                 ("ext.sh", PROBE, 0o100755)]))
    got = _outcomes(attacked.attack("extensions", """
report("uid", os.getuid())
fd = os.open(%r, os.O_RDONLY)
attempt("extensions.install", {"name": "Test.Probe", "version": "1.0.0"}, fds=[fd])
attempt("extensions.configure", {"name": "Test.Probe", "version": "1.0.0", "extension": None,
                                 "seq": 1, "settings": '{"runtimeSettings": [{"handlerSettings": {}}]}'})
report("enable", attempt("extensions.run", {"name": "Test.Probe", "version": "1.0.0",
       "operation": "enable", "seq": 1, "extension": None}))
""" % package))
    assert got["enable"][0] == "ok" and got["enable"][1]["exit_code"] == 0, got
    output = got["enable"][1]["output"]
    assert "THP_enabled:\t1" in output, output
    assert "stdout=/" in output and "(deleted)" in output, output
    assert "dotfiles= \n" in output or "dotfiles=\n" in output, output


def _forks_of(pid):
    """The supervisor's children that are copies of itself (a broker's fork keeps its title)."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        title = f.read()
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids = f.read().split()
        except OSError:
            continue
        for kid in kids:
            try:
                with open("/proc/%s/cmdline" % kid, "rb") as f:
                    if f.read() == title:
                        out.append(int(kid))
            except OSError:
                pass
    return out


def test_a_burst_of_hostile_installs_then_death_leaves_no_fork_and_no_folder(attacked):
    """The broker extracts in a fork of the supervisor (launch/forked.py). The worker sends
    twelve bomb packages at once, reads two answers and dies with the rest in flight: each
    call is refused or BUSY, every fork is reaped, nothing is left in Lib.Dir, and the
    broker still installs a good package for the restarted worker."""
    bomb = _put(attacked, "bomb.zip", _zip(HOSTILE["bomb"]))
    records = attacked.attack("extensions", """
import time
report("uid", os.getuid())
for i in range(12):
    fd = os.open(%r, os.O_RDONLY)
    channel.send(envelope.request(200 + i, "extensions.install",
                                  {"name": "Test.Burst%%d" %% i, "version": "1.0.0"}), [fd])
    os.close(fd)
got = 0
while got < 2:
    msg, fds = channel.receive(time.monotonic() + 60)
    if isinstance(msg, envelope.Reply):
        report("answer", [msg.ok, None if msg.ok else msg.error.code])
        got += 1
os._exit(0)
""" % bomb, timeout=90)
    assert records[0]["value"] != 0, records   # the worker's own uid, not root
    answers = [r["value"] for r in records if r["key"] == "answer"]
    assert len(answers) == 2 and all(a[0] is False and a[1] in ("FAILED", "BUSY")
                                     for a in answers), answers
    sup = attacked.proc.pid
    wait_for(lambda: _forks_of(sup) == [] and _lib(attacked) == [], 60, 0.2,
             "every fork reaped and no folder left")
    assert attacked.proc.poll() is None
    # The broker still works: a good package, from the restarted worker's successor script.
    good = _put(attacked, "good.zip", build_zip(GOOD))
    records = attacked.attack("extensions", """
fd = os.open(%r, os.O_RDONLY)
report("install", attempt("extensions.install", {"name": "Test.Good", "version": "1.0.0"},
                          fds=[fd]))
""" % good)
    got = _outcomes(records)
    assert got["install"][0] == "ok" and got["install"][1]["files"] > 1, got
    assert _lib(attacked) == ["Test.Good-1.0.0"]
    assert _forks_of(sup) == []



def _inotify_instances(pid):
    """How many inotify instances a process holds (its descriptors' targets)."""
    found = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            found += os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "anon_inode:inotify"
        except OSError:
            pass
    return found


def test_the_status_watch_is_the_workers_own_and_only_on_the_brokers_folder(attacked):
    """extensions.read_status adds a watch to an inotify instance the worker sends (issue 17:
    an idle poll need not ask). The worker's worst: descriptors that are no inotify instance
    (a pipe nobody writes, a FIFO, /dev/null), a handler that is not installed, its own
    watch on the folder it now knows of, a status folder an extension turned into a symlink
    to /etc, two descriptors. The broker keeps no instance, never blocks, and watches only
    the installed handler's status folder, whose changes the worker then sees."""
    package = _put(attacked, "good.zip", build_zip(GOOD))
    fifo = os.path.join(attacked.test_dir, "fifo")
    os.mkfifo(fifo, 0o666)
    status = os.path.join(attacked.dir, "lib", "Test.Good-1.0.0", "status")
    wrote, linked = (os.path.join(attacked.test_dir, n) for n in ("wrote", "linked"))
    attacked.start_attack("extensions", """
import ctypes, errno, time
libc = ctypes.CDLL(None, use_errno=True)
report("uid", os.getuid())
worker.ready()   # it waits for the test in the middle: not a worker that never started
def wait_file(path):
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        worker.tick()   # waiting for the test, not stuck
        time.sleep(0.05)
fd = os.open(%r, os.O_RDONLY)
attempt("extensions.install", {"name": "Test.Good", "version": "1.0.0"}, fds=[fd])
attempt("extensions.configure", {"name": "Test.Good", "version": "1.0.0", "extension": None,
                                 "seq": 0, "settings": '{"runtimeSettings": [{"handlerSettings": {}}]}'})
attempt("extensions.run", {"name": "Test.Good", "version": "1.0.0", "operation": "install",
                           "seq": 0, "extension": None})
report("enable", attempt("extensions.run", {"name": "Test.Good", "version": "1.0.0",
       "operation": "enable", "seq": 0, "extension": None}))
ask = {"name": "Test.Good", "version": "1.0.0", "seq": 0, "extension": None}
ino = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
def drained():
    try:
        return len(os.read(ino, 65536))
    except BlockingIOError:
        return 0
report("watched", attempt("extensions.read_status", ask, fds=[ino]))
report("quiet", drained())
report("not_installed", attempt("extensions.read_status", dict(ask, name="Test.None"),
                                fds=[ino]))
r, w = os.pipe()
report("pipe", attempt("extensions.read_status", ask, fds=[r], timeout=10))
f = os.open(%r, os.O_RDONLY | os.O_NONBLOCK)
report("fifo", attempt("extensions.read_status", ask, fds=[f], timeout=10))
null = os.open("/dev/null", os.O_RDONLY)
report("null", attempt("extensions.read_status", ask, fds=[null], timeout=10))
own = libc.inotify_add_watch(ino, %r.encode(), 0xfff)
report("own_watch", [own, errno.errorcode.get(ctypes.get_errno())])
report("quiet_still", drained())
wait_file(%r)
deadline = time.monotonic() + 20
while not drained() and time.monotonic() < deadline:
    worker.tick()
    time.sleep(0.05)
report("saw_the_write", time.monotonic() < deadline)
wait_file(%r)
report("symlinked", attempt("extensions.read_status", ask, fds=[ino]))
report("two", attempt("extensions.read_status", ask, fds=[ino, null], timeout=10))
""" % (package, fifo, status, wrote, linked))

    def record(key):
        def seen():
            got = {r["key"]: r["value"] for r in attacked.attack_records("extensions")}
            return got if key in got or "crashed" in got else None
        got = wait_for(seen, 60, 0.1, "the attack to report " + key)
        assert "crashed" not in got, got
        return got
    got = record("quiet_still")
    assert got["uid"] != 0, got
    assert got["enable"][0] == "ok" and got["enable"][1]["exit_code"] == 0, got
    # The worker's own instance: watched, and quiet while nobody writes.
    assert got["watched"][0] == "ok" and got["watched"][1]["watched"] is True, got
    assert got["watched"][1]["status"], got
    assert got["quiet"] == 0 and got["quiet_still"] == 0, got
    assert got["not_installed"][:2] == ["error", "FAILED"], got
    # Not an inotify instance: answered at once, nothing watched.
    for key in ("pipe", "fifo", "null"):
        assert got[key][0] == "ok" and got[key][1]["watched"] is False, (key, got[key])
    # What the broker watched gives the worker no watch of its own on a root-only folder.
    assert got["own_watch"] == [-1, "EACCES"], got
    # An extension (root) writes its status: the worker's instance says so.
    with open(os.path.join(status, "0.status"), "w") as f:
        f.write('[{"status": {"status": "success"}}]')
    open(wrote, "w").close()
    got = record("saw_the_write")
    assert got["saw_the_write"] is True, got
    # The extension makes its status folder a link to /etc: not followed, not watched.
    shutil.rmtree(status)
    os.symlink("/etc", status)
    open(linked, "w").close()
    got = record("symlinked")
    assert got["symlinked"][0] == "ok" and got["symlinked"][1]["watched"] is False, got
    # Two descriptors where one is declared: a violation, the worker ended.
    wait_for(lambda: not pid_alive(attacked.attack_records("extensions")[0]["pid"]), 30, 0.1,
             "the worker that sent two descriptors to be ended")
    assert "event=security" in attacked.log("supervisor")
    assert "two" not in {r["key"] for r in attacked.attack_records("extensions")}
    assert attacked.proc.poll() is None
    assert _inotify_instances(attacked.proc.pid) == 0
    attacked.calm("extensions")
