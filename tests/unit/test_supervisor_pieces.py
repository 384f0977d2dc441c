"""The supervisor's pure pieces: backoff and flapping, redaction, policy, control access,
state transitions, sysusers parsing, log capture and rotation."""

import os
import threading
import time

import pytest

from cli import accounts
from ipc import envelope
from ipc.errors import BAD_ENVELOPE, DENIED, INVALID_ARGS, UNKNOWN_VERB, IpcError
from supervisor import broker, control, states, table
from supervisor.backoff import BackoffPolicy, FailureHistory, next_step
from loglines import Capture, Console, LogFile
from supervisor.policy import LIFECYCLE, Permit, Policy
from supervisor.privileged import verbs
from redaction import MARK, LineRedactor, redact
from launch import worker_env

TABLE = LIFECYCLE + tuple(verbs.table().values())   # the lifecycle and privileged rows


# ---- backoff and flapping ---------------------------------------------------------------
def test_first_failure_restarts_at_once_then_doubles_up_to_the_cap():
    p = BackoffPolicy(delay=1.0, max_delay=5.0, window=100, max_failures=10)
    assert [p.delay_for(n) for n in range(1, 7)] == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_failures_within_the_window_go_fatal_and_old_ones_are_forgotten():
    p = BackoffPolicy(delay=0.5, max_delay=60, window=10, max_failures=3)
    h = FailureHistory()
    assert next_step(h, 0.0, p) == 0.0
    assert next_step(h, 1.0, p) == 0.5
    assert next_step(h, 2.0, p) is None          # 3 in 10 s: FATAL
    h = FailureHistory()
    assert next_step(h, 0.0, p) == 0.0
    assert next_step(h, 20.0, p) == 0.0          # the first is outside the window
    assert next_step(h, 25.0, p) == 0.5


def test_table_takes_timings_from_the_config():
    import config
    conf = config.parse("Agent.HeartbeatInterval=0.5\nAgent.FlapMaxFailures=2\n"
                        "Agent.MemorySoftLimit=1000\n")
    t = table.build(conf)
    assert list(t) == ["provisioning", "monitoring", "extensions", "logcollector"]
    assert all(s.heartbeat_interval == 0.5 and s.backoff.max_failures == 2
               and s.memory_soft_limit == 1000 for s in t.values())
    assert t["provisioning"].restart == table.ON_FAILURE
    assert len({s.user for s in t.values()}) == 4
    assert all(s.group == "guestagent-wire" for s in t.values())


def test_sysusers_file_declares_every_worker_user_with_the_wire_group():
    entries = accounts.load(os.path.join(os.path.dirname(__file__), "..", "..", "systemd",
                                         "guestagent.sysusers.conf"))
    users = {e.name: e.group for e in entries if e.kind == "u"}
    assert users == {s.user: "guestagent-wire" for s in table.BASE}
    assert {e.name for e in entries if e.kind == "g"} == {"guestagent-wire", "guestagent-admin"}
    with pytest.raises(ValueError):
        accounts.parse("r - 100-200\n")


# ---- states -------------------------------------------------------------------------------
def test_running_only_follows_starting_and_fatal_needs_a_start():
    states.check(states.STARTING, states.RUNNING)
    with pytest.raises(states.TransitionError):
        states.check(states.STOPPED, states.RUNNING)
    with pytest.raises(states.TransitionError):
        states.check(states.FATAL, states.RUNNING)
    assert set(states.TRANSITIONS) == set(states.ALL)


# ---- redaction ----------------------------------------------------------------------------
@pytest.mark.parametrize("line,secret", [
    ('{"adminPassword": "hunter2", "user": "bob"}', "hunter2"),
    ('{"password":"a\\"b"}', 'a\\"b'),
    ("chpasswd password=s3cr3t&next=1", "s3cr3t"),
    ("<UserPassword>P@ss w0rd</UserPassword>", "P@ss w0rd"),
    ('"protectedSettings": "MIIBsecretblob"', "MIIBsecretblob"),
    ("<ProtectedSettings>MIIBxml</ProtectedSettings>", "MIIBxml"),
    ("GET https://acct.blob.core.windows.net/c/b?sv=2020-08-04&sig=AbC%2Fd%3D&se=2025", "AbC%2Fd"),
    ("url ...&SIG=UPPER", "UPPER"),
    ("-----BEGIN RSA PRIVATE KEY-----MIIEkey-----END RSA PRIVATE KEY-----", "MIIEkey"),
    ('{\\"adminPassword\\":\\"nested\\"}', "nested"),
])
def test_secrets_are_redacted(line, secret):
    out = redact(line)
    assert secret not in out and MARK in out


def test_what_is_not_secret_stays():
    line = '"protectedSettingsCertThumbprint": "ABCDEF", "publicSettings": {"a": 1}'
    assert redact(line) == line
    assert redact("the password policy changed") == "the password policy changed"


def test_a_private_key_block_over_several_lines_is_removed():
    r = LineRedactor()
    lines = ["key: -----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBg", "kqhkiG9w0BAQEF",
             "-----END PRIVATE KEY-----", "after"]
    out = [r.line(l) for l in lines]
    assert not any("MIIEvQ" in l or "kqhk" in l for l in out)
    assert out[-1] == "after"


# ---- policy ---------------------------------------------------------------------------
def hello(name="extensions"):
    return envelope.Request(1, "worker.hello", {"worker": name, "pid": 5, "protocol": 1})


def notice(name, args=None):
    return envelope.Notice(name, args or {})


def code_of(session, msg):
    with pytest.raises(IpcError) as e:
        session.check(msg)
    return e.value.code


def test_hello_first_and_once():
    s = Policy().session("extensions")
    assert code_of(s, notice("worker.heartbeat")) == DENIED
    s.check(hello())
    s.check(notice("worker.heartbeat"))
    assert code_of(s, hello()) == DENIED
    s.check(notice("worker.ready"))
    assert code_of(s, notice("worker.ready")) == DENIED


def test_unknown_denied_invalid_and_wrong_kind():
    s = Policy().session("monitoring")
    s.check(hello("monitoring"))
    assert code_of(s, envelope.Request(2, "nosuch.verb", {})) == UNKNOWN_VERB
    assert code_of(s, envelope.Request(2, "control.stop", {"worker": "x"})) == DENIED
    assert code_of(s, notice("worker.status", {"message": 42})) == INVALID_ARGS
    assert code_of(s, notice("worker.status", {"message": "x", "more": 1})) == INVALID_ARGS
    assert code_of(s, envelope.Request(3, "worker.heartbeat", {})) == BAD_ENVELOPE
    assert code_of(s, envelope.Reply(3, True, {}, None)) == BAD_ENVELOPE


def test_debug_verbs_exist_only_with_test_hooks():
    s = Policy(test_hooks=False).session("extensions")
    s.check(hello())
    assert code_of(s, envelope.Request(2, "debug.sleep", {"seconds": 1})) == DENIED
    s = Policy(test_hooks=True).session("extensions")
    s.check(hello())
    s.check(envelope.Request(2, "debug.sleep", {"seconds": 1}))


def test_a_gate_closes_for_good_and_once_is_per_process():
    rows = TABLE + (Permit("worker.status", frozenset(["provisioning"]), gate="prov",
                           closes=None),)
    with pytest.raises(ValueError):
        Policy(rows)   # two rows for one verb
    rows = tuple(r for r in TABLE if r.verb != "worker.status") + (
        Permit("worker.status", frozenset(["provisioning"]), gate="prov", closes="prov"),)
    policy = Policy(rows)
    s = policy.session("provisioning")
    s.check(hello("provisioning"))
    s.check(notice("worker.status", {"message": "x"}))
    policy.succeeded("worker.status")
    assert code_of(s, notice("worker.status", {"message": "x"})) == DENIED
    s2 = policy.session("provisioning")          # a restarted worker: gate still closed
    s2.check(hello("provisioning"))              # but its ONCE verbs are fresh
    assert code_of(s2, notice("worker.status", {"message": "x"})) == DENIED
    other = policy.session("monitoring")
    other.check(hello("monitoring"))
    assert code_of(other, notice("worker.status", {"message": "x"})) == DENIED


def test_monitoring_repeats_the_periodic_boot_verbs_on_their_period_and_no_sooner():
    from config import defaults
    policy = Policy()
    policy.conf = defaults().with_overrides(OS__RootDeviceScsiTimeoutPeriod=1)
    mon = policy.session("monitoring")
    mon.check(hello("monitoring"))
    scsi = envelope.Request(2, "boot.scsi_timeouts", {})
    mon.check(scsi)
    assert code_of(mon, scsi) == DENIED          # sooner than half a period
    time.sleep(0.55)
    mon.check(scsi)                              # once per half period, again and again
    time.sleep(0.55)
    assert code_of(mon, envelope.Request(3, "boot.scsi_timeouts", {"timeout": 1})) == \
        INVALID_ARGS
    for verb in ("boot.entropy", "boot.numa", "boot.scvmm"):   # not the per-boot-only ones
        assert code_of(mon, envelope.Request(4, verb, {})) == DENIED
    prov = policy.session("provisioning")        # provisioning: still once per process
    prov.check(hello("provisioning"))
    prov.check(scsi)
    time.sleep(0.55)
    assert code_of(prov, scsi) == DENIED
    ext = policy.session("extensions")
    ext.check(hello())
    assert code_of(ext, scsi) == DENIED


def test_every_granted_verb_has_a_handler_or_is_lifecycle():
    for permit in TABLE:
        assert permit.verb.startswith("worker.") or permit.verb in verbs.HANDLERS


def test_slow_handler_ends_when_the_supervisor_stops():
    cancel = threading.Event()
    cancel.set()
    ctx = broker.Context("extensions", None, cancel)
    assert verbs.HANDLERS["debug.sleep"].fn(ctx, {"seconds": 60})["slept"] < 1


# ---- control access ---------------------------------------------------------------------
def test_root_all_admin_readonly_others_nothing():
    root = control.Peer(1, 0, 0, frozenset())
    admin = control.Peer(1, 1000, 1000, frozenset([1000, 4242]))
    other = control.Peer(1, 1001, 1001, frozenset([1001]))
    for verb in ("control.status", "control.restart", "control.reload"):
        control.authorize(root, verb, 4242)
    control.authorize(admin, "control.status", 4242)
    control.authorize(admin, "control.logs", 4242)
    for peer, verb in ((admin, "control.restart"), (admin, "control.stop"),
                       (other, "control.status"), (other, "control.version")):
        with pytest.raises(IpcError) as e:
            control.authorize(peer, verb, 4242)
        assert e.value.code == DENIED
    with pytest.raises(IpcError) as e:
        control.authorize(root, "worker.hello", 4242)
    assert e.value.code == UNKNOWN_VERB
    with pytest.raises(IpcError):
        control.authorize(admin, "control.status", None)   # no admin group on this host


def test_worker_environment_is_clean():
    env = worker_env("extensions", "/etc/waagent.conf", "INFO")
    assert set(env) == {"PATH", "LANG", "HOME", "GUESTAGENT_CHANNEL_FD", "GUESTAGENT_WORKER",
                        "GUESTAGENT_CONFIG", "GUESTAGENT_LOG_LEVEL"}
    assert "GUESTAGENT_TEST_DIR" in worker_env("x", "c", "INFO", "/tmp/t")


# ---- log capture --------------------------------------------------------------------------
def test_capture_levels_redacts_caps_and_rotates(tmp_path):
    forwarded = []
    lf = LogFile(str(tmp_path / "w.log"), max_bytes=4096, backups=2)
    cap = Capture("w", lf, lambda prio, text: forwarded.append((prio, text)))
    cap.feed(b"2025-01-01T00:00:00.000Z WARNING w[7]: disk low\n")
    cap.feed(b"2025-01-01T00:00:00.000Z INFO w[7]: password=abc\nTraceback (most recent")
    cap.feed(b" call last):\n  File x\nraw " + b"y" * 9000 + b"\n")
    assert forwarded[0] == (4, "w[7]: disk low")
    assert forwarded[1] == (6, "w[7]: password=%s" % MARK)
    assert forwarded[2][0] == 3 and forwarded[3][0] == 3       # the traceback is an error
    assert any("[line cut at 8192 bytes]" in t for _, t in forwarded)
    for i in range(200):
        cap.feed(b"2025-01-01T00:00:00.000Z INFO w[7]: line %d\n" % i)
    names = sorted(os.listdir(tmp_path))
    assert names == ["w.log", "w.log.1", "w.log.2"]
    assert all(os.path.getsize(tmp_path / n) <= 4096 + 8300 for n in names)
    assert (tmp_path / "w.log").read_text().splitlines()[-1].endswith("line 199")


def test_console_honours_console_and_verbose():
    import io
    out = io.StringIO()
    c = Console(enabled=False, verbose=False, stream=out)
    c(6, "info")
    c(3, "error")
    c.enabled = True
    c(7, "debug")
    c.verbose = True
    c(7, "debug2")
    assert out.getvalue() == "<3>error\n<7>debug2\n"


def test_console_echo_never_blocks_and_never_creates_the_device(tmp_path):
    """The echo to the system console (protocol.md §3.6) must not stall the supervisor when
    the console does not drain (a serial line nobody reads), nor make a file where the
    device is missing."""
    import io
    c = Console(enabled=True, stream=io.StringIO())
    assert c.echo_to(str(tmp_path / "no-console")) is not None
    assert not (tmp_path / "no-console").exists() and c.echo_fd == -1
    fifo = str(tmp_path / "console")
    os.mkfifo(fifo)
    # A FIFO without a reader cannot be opened non-blocking for writing: a clear reason.
    assert c.echo_to(fifo) is not None
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert c.echo_to(fifo) is None
        t0 = time.monotonic()
        for i in range(20000):      # ~1.5 MB into a 64 KiB pipe nobody reads
            c(6, "line %05d %s" % (i, "x" * 60))
        assert time.monotonic() - t0 < 10
        first = os.read(reader, 200).decode()
        assert " guestagent: line 00000 " in first
        assert c.stream.getvalue().count("\n") == 20000   # the journal lost nothing
        c.echo_off()
        assert c.echo_fd == -1
    finally:
        os.close(reader)


def test_no_huge_pages_for_us_and_the_kernels_choice_for_an_extension_command():
    # launch.no_huge_pages (the supervisor, the spawner, the workers; issue 17) and
    # launch.kernel_huge_pages around an extension command's start: in a fresh interpreter,
    # since the flag is the process's.
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-I", "-c", (
        "import sys, subprocess; sys.path.insert(0, %r)\n"
        "import launch\n"
        "thp = lambda text: [l.split()[1] for l in text.splitlines() if l.startswith('THP_enabled')]\n"
        "launch.no_huge_pages()\n"
        "ours = thp(open('/proc/self/status').read())\n"
        "with launch.kernel_huge_pages():\n"
        "    child = thp(subprocess.run(['cat', '/proc/self/status'], capture_output=True,\n"
        "                               text=True).stdout)\n"
        "print(ours, child, thp(open('/proc/self/status').read()))") % root],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['0']", "['1']", "['0']"]
