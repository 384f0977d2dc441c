"""Log capture as the supervisor does it (loglines/, supervisor/logs.py): the worker's name from
the pipe, control characters escaped, whole lines redacted however they arrive, and security.log."""

import io
import logging
import os
import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from redaction import MARK
from loglines import MAX_LINE, Capture, Console, LogFile
from supervisor.logs import SECURITY, SecurityLog, SupervisorHandler


class Sink:
    """Stands in for the journal (Console): what was forwarded, by priority."""

    def __init__(self):
        self.lines = []

    def __call__(self, priority, text):
        self.lines.append((priority, text))


def capture(tmp_path, name="monitoring", max_bytes=10 ** 7):
    lf = LogFile(str(tmp_path / (name + ".log")), max_bytes=max_bytes, backups=1)
    sink = Sink()
    return Capture(name, lf, sink), sink, tmp_path / (name + ".log")


def test_a_line_naming_another_process_is_filed_as_the_pipes_worker(tmp_path):
    cap, sink, path = capture(tmp_path)
    cap.feed(b"2026-01-01T00:00:00.000Z WARNING supervisor[1]: event=security code=FORGED\n"
             b"2026-01-01T00:00:00.000Z INFO extensions[9]: event=x FORGED2\n"
             b"2026-01-01T00:00:00.000Z INFO monitoring[7]: its own line\n")
    lines = path.read_text().splitlines()
    assert lines[0].split(" ", 3)[2:] == [
        "monitoring[-]:", "2026-01-01T00:00:00.000Z WARNING supervisor[1]: event=security "
        "code=FORGED"]
    assert " monitoring[-]: 2026-01-01T00:00:00.000Z INFO extensions[9]: " in lines[1]
    assert lines[2] == "2026-01-01T00:00:00.000Z INFO monitoring[7]: its own line"
    assert [t.split(":", 1)[0] for _, t in sink.lines] == [
        "monitoring[-]", "monitoring[-]", "monitoring[7]"]


def test_control_characters_are_escaped_in_the_file_and_the_forward(tmp_path):
    cap, sink, path = capture(tmp_path)
    cap.feed(b"a \x1b]0;title\x07 b\rc \xc2\x9b d \xe2\x80\xae e\x00\n")
    text = path.read_bytes().decode()
    assert "\\x1b]0;title\\x07 b\\x0dc \\x9b d \\u202e e\\x00" in text
    assert text.count("\n") == 1
    assert "\x1b" not in sink.lines[0][1] and "\\x1b" in sink.lines[0][1]


def test_a_long_line_is_redacted_whole_cut_and_the_rest_dropped(tmp_path):
    cap, sink, path = capture(tmp_path)
    head = b"2026-01-01T00:00:00.000Z INFO monitoring[7]: "
    line = head + b"y" * (MAX_LINE - len(head) - 4) + b" password=SECRETVALUE and more\n"
    for i in range(0, len(line), 1000):         # arriving in small reads
        cap.feed(line[i:i + 1000])
    cap.feed(b"next\n")
    text = path.read_text()
    assert "SECRETVALUE" not in text and "VALUE" not in text
    assert "[line cut at %d bytes]" % MAX_LINE in text
    assert "and more" not in text                # the rest of the line: dropped, not a line
    assert text.splitlines()[-1].endswith("monitoring[-]: next")


def test_a_key_block_opened_in_a_dropped_tail_still_hides_the_lines_after_it(tmp_path):
    cap, sink, path = capture(tmp_path)
    cap.feed(b"x" * (MAX_LINE + 100))
    cap.feed(b" -----BEGIN RSA PRIV")       # the marker cut between two reads
    cap.feed(b"ATE KEY-----\nMIIEsecretbody\n-----END RSA PRIVATE KEY-----\nafter\n")
    text = path.read_text()
    assert "MIIEsecretbody" not in text and "after" in text


@st.composite
def streams(draw):
    forms = ["<ns1:UserPassword>%s</ns1:UserPassword>", '"adminPassword": "%s"',
             "password=%s", "sig=%s", "<CustomData>%s</CustomData>", "'protectedSettings': '%s'"]
    lines, secrets = [], []
    for _ in range(draw(st.integers(1, 4))):
        secret = "ZQX%dQXZ" % draw(st.integers(0, 10 ** 9))
        pad = draw(st.integers(0, MAX_LINE + 200))
        lines.append(b"%s %s\n" % (b"p" * pad, (draw(st.sampled_from(forms)) % secret).encode()))
        secrets.append(secret)
    data = b"".join(lines)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    return data, cuts, secrets


@settings(max_examples=150, deadline=None)
@given(streams())
def test_however_the_reads_fall_no_secret_reaches_the_file(tmp_path_factory, case):
    data, cuts, secrets = case
    cap, sink, path = capture(tmp_path_factory.mktemp("c"))
    last = 0
    for c in cuts + [len(data)]:
        cap.feed(data[last:c])
        last = c
    cap.close()
    text = path.read_text()
    for s in secrets:
        assert "ZQX" not in text and "QXZ" not in text, (s, text[-300:])
    assert all("ZQX" not in t and "QXZ" not in t for _, t in sink.lines)


# ---- the supervisor's own lines and security.log ----------------------------------------
def handler(tmp_path, **kw):
    out = io.StringIO()
    lf = LogFile(str(tmp_path / "supervisor.log"), max_bytes=4096, backups=1)
    h = SupervisorHandler(lf, Console(enabled=True, stream=out), **kw)
    logger = logging.getLogger("test.logcapture.%s" % tmp_path.name)
    logger.propagate = False
    logger.handlers = [h]
    logger.setLevel(logging.INFO)
    return logger, out


def test_security_events_go_to_security_log_from_the_format_string_only(tmp_path):
    log, out = handler(tmp_path)
    log.warning("event=security worker=%s code=%s detail=%r", "monitoring", "DENIED", "x")
    log.info("event=verb worker=%s verb=%s", "monitoring", "event=security FORGED")
    log.info("event=custom note=%s", "kept", extra=SECURITY)
    log.warning("event=control_denied peer=%r verb=%s", "uid 5", "x\n<3>supervisor: FORGED2")
    path = tmp_path / "security.log"
    st_ = os.stat(path)
    assert stat.S_IMODE(st_.st_mode) == 0o600 and st_.st_uid == os.geteuid()
    text = path.read_text()
    assert "event=security worker=monitoring" in text and "event=custom note=kept" in text
    assert "event=verb" not in text
    lines = text.splitlines()
    assert len(lines) == 3 and "FORGED2" in lines[2]
    # One record, one journal line: the newline is shown, not obeyed.
    assert not any(l.startswith("<3>supervisor: FORGED2") for l in out.getvalue().splitlines())


def test_a_flood_of_supervisor_lines_does_not_rotate_security_log(tmp_path):
    log, _ = handler(tmp_path)
    log.warning("event=security worker=monitoring code=DENIED first")
    for i in range(5000):
        log.info("event=verb worker=extensions verb=debug.sleep id=%d", i)
    assert "first" not in (tmp_path / "supervisor.log").read_text()   # rotated away there
    assert "first" in (tmp_path / "security.log").read_text()


def test_a_flood_of_one_security_event_is_counted_not_written(tmp_path):
    now = [0.0]
    sec = SecurityLog(str(tmp_path / "security.log"), burst=10, window=60.0,
                      clock=lambda: now[0])
    sec.write("security", "first security event")
    for i in range(1000):
        sec.write("control_denied", "denied %d" % i)
    now[0] = 61.0
    sec.write("control_denied", "denied later")
    text = (tmp_path / "security.log").read_text()
    assert "first security event" in text
    assert sum(l.startswith("denied ") for l in text.splitlines()) == 11
    assert "denied later" in text
    assert "event=security_log_suppressed suppressed_event=control_denied count=990" in text


def test_an_older_wider_security_log_is_narrowed(tmp_path):
    path = tmp_path / "security.log"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    SecurityLog(str(path)).write("security", "x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_supervisor_handler_redacts_and_escapes(tmp_path):
    log, out = handler(tmp_path)
    log.info("event=x detail=%s", "password=hunter2 \x1b[2J")
    text = (tmp_path / "supervisor.log").read_text()
    assert "hunter2" not in text and MARK in text and "\\x1b[2J" in text
    assert "hunter2" not in out.getvalue() and "\x1b" not in out.getvalue()
