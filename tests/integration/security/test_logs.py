"""Logs you can trust (issue 10 §3, §4), attacked from a real worker process whose code is
replaced by the attack, under its own uid, on its own channel and its own log pipe.

- A worker cannot write a line that passes for the supervisor's (in its log file, the journal
  forward, supervisor.log or security.log).
- Control characters a worker writes (a log line, a `worker.status` message) never reach
  root's terminal raw through the log files, the journal forward, `agentctl status` or
  `agentctl logs`.
- Every secret form a worker might log is redacted, whole lines, however long.
- Security events survive a flood in security.log.
- File descriptors sent in frames that never complete do not pile up in the supervisor.
"""

import os
import re
import resource
import stat
import subprocess
import threading
import time

from tests.integration.supervisor_harness import AGENTCTL, pid_alive, wait_for

# The characters a terminal acts on: C0 (but TAB), DEL, C1, bidi and line/paragraph separators.
RAW_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def ctl_output(agent, *args):
    """agentctl's stdout as the terminal gets it: bytes, no newline translation (text mode
    would turn a raw CR into a newline)."""
    r = subprocess.run([AGENTCTL, "--config", agent.conf] + list(args), capture_output=True,
                       timeout=60)
    assert r.returncode in (0, 6), r.stderr
    return r.stdout.decode("utf-8")


def raw_text(path):
    """A file as written: no newline translation (a raw CR stays a CR)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return f.read()


def raw_controls(text):
    return RAW_CONTROL.findall(text.replace("\n", ""))


def finished(records):
    """The script ran to its end in the first process (a resident worker restarted after it
    may run it again; that is fine)."""
    return any(r["key"] == "done" and r["pid"] == records[0]["pid"] for r in records)


def wait_in_log(agent, name, needle, timeout=10):
    return wait_for(lambda: needle in agent.log(name), timeout, 0.05, "%r in %s.log" % (
        needle, name))


def test_a_forged_supervisor_line_is_filed_as_the_workers(agent):
    records = agent.attack("monitoring", r"""
report("uid", os.getuid())
os.write(2, b"2026-01-01T00:00:00.000Z WARNING supervisor[1]: event=security worker=extensions"
            b" pid=1 code=FORGED1 action=killed\n")
os.write(2, b"supervisor[1]: event=security worker=extensions code=FORGED2\n")
os.write(2, b"<3>supervisor: event=security code=FORGED3\n")
os.write(2, b"x\r2026-01-01T00:00:00.000Z ERROR supervisor[1]: event=security code=FORGED4\n")
""")
    assert finished(records), records
    wait_in_log(agent, "monitoring", "FORGED4")
    own = re.compile(r"^\S+Z [A-Z]+ monitoring\[[-0-9]*\]: ")
    for n in range(1, 5):
        needle = "FORGED%d" % n
        lines = [l for l in agent.log("monitoring").splitlines() if needle in l]
        assert lines, needle
        for line in lines:
            assert own.match(line), "filed as someone else's: %r" % line
        assert needle not in agent.log("supervisor")
        assert needle not in agent.log("security")
        # The journal forward: the supervisor names the pipe's worker first, every time.
        forwarded = [l for l in agent.stderr().splitlines() if needle in l]
        assert forwarded, needle
        for line in forwarded:
            assert re.match(r"^<\d>monitoring\[[-0-9]*\]: ", line), \
                "forwarded as someone else's: %r" % line


NASTY_STATUS = "\x1b[2J\x1b]0;owned\x07\rroot# \x9b31m\u202eevil\x00end"
NASTY_LINE = b"ESCLINE \x1b[31mred\x1b[0m\r\x07\x00 \xc2\x9b1m \xe2\x80\xae tail \x7f\n"


def test_control_characters_never_reach_the_terminal(agent):
    records = agent.attack("logcollector", r"""
report("uid", os.getuid())
os.write(2, %r)
channel.send(envelope.notice("worker.status", {"message": %r}))
""" % (NASTY_LINE, NASTY_STATUS))
    assert finished(records), records
    wait_in_log(agent, "logcollector", "ESCLINE")
    agent.wait_state("logcollector", "EXITED")

    logged = raw_text(os.path.join(agent.log_dir, "logcollector.log"))
    line = next(l for l in logged.split("\n") if "ESCLINE" in l)
    assert not RAW_CONTROL.search(line), repr(line)
    assert "\\x1b[31mred" in line     # shown, escaped: not dropped
    assert "tail" in line             # one line: nothing after the CR went missing

    forwarded = [l for l in raw_text(agent.stderr_path).split("\n") if "ESCLINE" in l]
    assert forwarded and not any(RAW_CONTROL.search(l) for l in forwarded), forwarded

    out = ctl_output(agent, "logs", "logcollector", "-n", "50")
    assert "ESCLINE" in out
    assert not raw_controls(out), repr(out)

    out = ctl_output(agent, "status")
    assert "owned" in out, out               # the message is shown...
    assert not raw_controls(out), repr(out)
    assert "\\x1b]0;owned" in out            # ...with its controls visible
    out = ctl_output(agent, "status", "logcollector")
    assert "owned" in out and not raw_controls(out), repr(out)


# One secret per form; each line carries a label that must survive (the line is not dropped).
SECRET_FORMS = [
    ("xml-ns", "<ns1:UserPassword>S3cret-xmlns</ns1:UserPassword>", "S3cret-xmlns"),
    ("xml", "<UserPassword>S3cret xml plain</UserPassword>", "S3cret xml plain"),
    ("xml-custom", "<CustomData>Q3VzdG9tRGF0YVNlY3JldA==</CustomData>",
     "Q3VzdG9tRGF0YVNlY3JldA=="),
    ("xml-protected", "<ProtectedSettings>MIIBprotectedXML</ProtectedSettings>",
     "MIIBprotectedXML"),
    ("cdata", "<ns1:UserPassword><![CDATA[S3cret<cdata>&]]></ns1:UserPassword>", "S3cret<cdata>"),
    ("json-object", '{"protectedSettings": {"commandToExecute": "echo Sx-json-obj"}}',
     "Sx-json-obj"),
    ("json-string", '{"protectedSettings": "MIIBjsonstring", "thumb": "AB"}', "MIIBjsonstring"),
    ("json-admin", '{"adminPassword": "S3cret json with spaces"}', "S3cret json with spaces"),
    ("pydict", "{'adminPassword': 'S3cret py dict', 'user': 'azureuser'}", "S3cret py dict"),
    ("pydict-object", "{'protectedSettings': {'script': 'Sx-py-obj'}}", "Sx-py-obj"),
    ("quoted", 'password="S3cret quoted value" user=azureuser', "S3cret quoted value"),
    ("kv", "password=S3cretKV user=azureuser", "S3cretKV"),
    ("sas", "GET https://a.blob.core.windows.net/c/b?sv=2020-08-04&se=2030-01-01&sp=r"
     "&sig=SaSsIgNaTuRe%2Bx%3D&sr=b", "SaSsIgNaTuRe"),
    ("pem", "key -----BEGIN RSA PRIVATE KEY-----MIIEpemONELINE-----END RSA PRIVATE KEY-----",
     "MIIEpemONELINE"),
    ("customdata", '"customData": "Y3VzdG9tLWRhdGEtc2VjcmV0"', "Y3VzdG9tLWRhdGEtc2VjcmV0"),
]


def test_every_secret_form_a_worker_logs_is_redacted(make_agent):
    # Files big enough to keep every line of the test (the harness rotates at 256 KiB).
    agent = make_agent({"Agent.LogMaxBytes": "4000000"}).start()
    lines = ["form-%s %s" % (label, text) for label, text, _ in SECRET_FORMS]
    records = agent.attack("monitoring", r"""
report("uid", os.getuid())
import logging
for line in %r:
    os.write(2, (line + "\n").encode())
    worker.log.info("via-logging " + line)
# A PEM block over several lines, and custom data as a pretty-printed element.
os.write(2, b"form-pemblock -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANpemblockline1\n"
            b"pemblockline2xyz\n-----END PRIVATE KEY----- after-pem\n")
os.write(2, b"form-xmlblock <CustomData>\nxmlblockline1secret\n</CustomData> after-xml\n")
# Longer than one read of the pipe, and than the line cap: the secret straddles the old cut.
os.write(2, b"form-long " + b"x" * 8176 + b" password=LongLineSecretValue\n")
# Longer than nine reads of the old 8 KiB cut, its end written later: "pass|word=" straddles
# the ninth cut.
import time
os.write(2, b"form-huge " + b"y" * (8192 * 9 - 15) + b" password=HugeLineSecretValue")
time.sleep(0.5)
os.write(2, b" tail\n")
os.write(2, b"form-last done\n")
""" % (lines,))
    assert finished(records), records
    wait_in_log(agent, "monitoring", "form-last")
    secrets = [s for _, _, s in SECRET_FORMS] + [
        "pemblockline1", "pemblockline2xyz", "xmlblockline1secret", "LongLineSecretValue",
        "HugeLineSecretValue"]
    logged = agent.log("monitoring")
    for where, text in (("monitoring.log", logged), ("journal forward", agent.stderr())):
        leaked = [s for s in secrets if s in text]
        assert not leaked, "%s leaks %s" % (where, leaked)
    for label, _, _ in SECRET_FORMS:   # redacted, not dropped
        assert "form-%s " % label in logged and "via-logging form-%s " % label in logged, label
    assert "after-pem" in logged and "after-xml" in logged
    assert "user=azureuser" in logged           # what is not secret stays
    huge = next(l for l in logged.splitlines() if "form-huge" in l)
    assert len(huge) < 20000 and "line cut" in huge


def test_security_events_survive_a_flood(agent):
    # A security event first: a denied verb ends the worker.
    records = agent.attack("monitoring", """
report("uid", os.getuid())
attempt("control.stop", {"worker": "extensions"})
""")
    assert records[-1]["key"] == "killed", records
    wait_in_log(agent, "supervisor", "event=security worker=monitoring")
    # Then a flood from another worker: 10k log lines and 10k calls of an ungated verb.
    records = agent.attack("extensions", """
report("uid", os.getuid())
for i in range(10000):
    os.write(2, b"flood line %05d " % i + b"z" * 60 + b"\\n")
done = 0
ident = 0
while done < 10000:
    for _ in range(8):
        ident += 1
        channel.send(envelope.request(ident, "debug.sleep", {"seconds": 0}))
    for _ in range(8):
        channel.receive()
        done += 1
report("calls", done)
""", timeout=240)
    assert records[-1]["key"] in ("done", "killed"), records
    wait_in_log(agent, "extensions", "flood line 09999", timeout=30)

    text = agent.log("security")
    assert "event=security worker=monitoring" in text, text[-2000:]
    assert "FORGED" not in text and "flood line" not in text
    st = os.stat(os.path.join(agent.log_dir, "security.log"))
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600


def supervisor_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_fds_in_frames_that_never_complete_are_capped(agent):
    sup = agent.status()["supervisor"]["pid"]
    # The limit the supervisor has under systemd without LimitNOFILE.
    resource.prlimit(sup, resource.RLIMIT_NOFILE, (1024, 1024))
    before = supervisor_fds(sup)
    # Enough descriptors to leave the supervisor a handful short of its limit.
    messages = (1024 - before - 6) // 4
    result = {}

    def attack():
        result["records"] = agent.attack("monitoring", r"""
import socket, struct, time
report("uid", os.getuid())
fd = os.open("/dev/null", os.O_RDONLY)
sock = channel.sock
# A frame announced at 4000 bytes that never completes, four descriptors with each byte.
socket.send_fds(sock, [struct.pack(">I", 4000)], [fd] * 4)
for i in range(%d):
    socket.send_fds(sock, [b" "], [fd] * 4)
report("sent")
time.sleep(6)
""" % messages, timeout=60)

    t = threading.Thread(target=attack)
    t.start()
    try:
        def holding():
            records = agent.attack_records("monitoring")
            keys = [r["key"] for r in records]
            if "sent" in keys:
                return "sent"
            if records and not pid_alive(records[0]["pid"]):
                return "killed"
            return None
        wait_for(holding, 60, 0.05, "the attack to send its descriptors")
        peak = 0
        for _ in range(20):    # while the supervisor reads what was sent
            peak = max(peak, supervisor_fds(sup))
            time.sleep(0.05)
        old_ext = agent.worker("extensions")["pid"]
        r = agent.ctl("restart", "extensions")
    finally:
        t.join(90)
    assert peak <= before + 8, "the supervisor holds %d fds (was %d)" % (peak, before)
    assert result["records"][-1]["key"] == "killed", result["records"]
    assert r.returncode == 0, r.stdout + r.stderr
    agent.wait_state("extensions", "RUNNING", pid_not=old_ext)
    assert "event=security worker=monitoring" in agent.log("security")


def test_many_fds_in_one_frame_end_the_worker(agent):
    sup = agent.status()["supervisor"]["pid"]
    before = supervisor_fds(sup)
    records = agent.attack("monitoring", r"""
import socket, struct
report("uid", os.getuid())
fd = os.open("/dev/null", os.O_RDONLY)
body = b'{"v":1,"notice":"worker.heartbeat","args":{}}'
# Five descriptors with one whole frame, sent as two messages (the cap is per frame)...
frame = struct.pack(">I", len(body)) + body
socket.send_fds(channel.sock, [frame[:2]], [fd] * 4)
socket.send_fds(channel.sock, [frame[2:]], [fd])
report("sent five")
import time
time.sleep(5)
""")
    assert records[-1]["key"] == "killed", records
    assert supervisor_fds(sup) <= before + 4
    # ...and sixty-four in one message.
    records = agent.attack("monitoring", r"""
import socket
report("uid", os.getuid())
fd = os.open("/dev/null", os.O_RDONLY)
socket.send_fds(channel.sock, [b"\0"], [fd] * 64)
import time
time.sleep(5)
""")
    assert records[-1]["key"] == "killed", records
    assert supervisor_fds(sup) <= before + 4
    r = agent.ctl("restart", "extensions")
    assert r.returncode == 0, r.stderr
