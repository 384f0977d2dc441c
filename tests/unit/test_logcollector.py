"""The log collector's pieces: the bundle (caps, redaction, partial), the memory watch, the
systemd-run scope line and the privilege-dropping entry point it runs (spawner.drop)."""

import io
import os
import pwd
import subprocess
import sys
import zipfile

import pytest

from config import defaults
import launch as spawn
from supervisor import slices, table
from workers.logcollector import memory
from workers.logcollector.bundle import Bundle, Stopped

MiB = 1024 * 1024


def open_fd(path):
    return os.open(str(path), os.O_RDONLY)


def test_caps_truncation_redaction_and_binary_files(tmp_path):
    log = tmp_path / "big.log"
    log.write_bytes(b"first line cut away\n" + b"x" * 3000 + b"\n" +
                    b'settings {"protectedSettings": "TOPSECRET"} kept\n' + b"tail\n" * 10)
    small = tmp_path / "small.log"
    small.write_bytes(b"url https://a.blob.core.windows.net/c?sv=1&sig=SASSECRET end\n")
    binary = tmp_path / "core"
    binary.write_bytes(b"\x7fELF\0\0\0" + b"\0" * 100)
    out = tmp_path / "logs.zip"
    b = Bundle(str(out), lambda: None, per_file=1000, total=1100)
    b.add_fd("var/log/big.log", open_fd(log), log.stat().st_size)
    b.add_fd("var/log/small.log", open_fd(small), small.stat().st_size)
    b.add_fd("var/core", open_fd(binary), binary.stat().st_size)
    b.add_fd("var/log/again.log", open_fd(log), log.stat().st_size)   # the total is spent
    b.close()
    assert os.stat(out).st_mode & 0o777 == 0o600
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        big = zf.read("truncated_var_log_big.log")
        results = zf.read("results.txt").decode()
        small_data = zf.read("var/log/small.log")
    assert b"first line" not in big and b"TOPSECRET" not in big and b"kept" in big
    assert len(big) <= 1000
    assert b"SASSECRET" not in small_data and b"end" in small_data
    assert "var/core" not in names and "var/core: a binary file (cannot be redacted)" in results
    assert "var/log/again.log" not in names
    assert "var/log/again.log: 1000 bytes do not fit the 0 MiB total" in results, results
    assert results.splitlines()[1] == "complete"


def test_history_zip_members_are_redacted(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ExtensionsConfig.1.xml", '<PluginSettings protectedSettings="PROT"/>\n'
                    '<Plugin location="https://x/y?sig=SIGSECRET"/>\n')
        zf.writestr("blob.bin", b"\0\1\2")
    hist = tmp_path / "1.zip"
    hist.write_bytes(buf.getvalue())
    out = tmp_path / "logs.zip"
    b = Bundle(str(out), lambda: None)
    b.add_fd("var/lib/waagent/history/1.zip", open_fd(hist), hist.stat().st_size)
    b.close()
    with zipfile.ZipFile(out) as zf:
        doc = zf.read("var/lib/waagent/history/1.zip/ExtensionsConfig.1.xml")
        assert "var/lib/waagent/history/1.zip/blob.bin" not in zf.namelist()
    assert b"SIGSECRET" not in doc and b"Plugin" in doc


def test_a_stop_mid_file_closes_a_valid_partial_bundle(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"line\n" * 100000)
    calls = [0]

    def stop():
        calls[0] += 1
        return "over budget" if calls[0] > 3 else None
    out = tmp_path / "logs.zip"
    b = Bundle(str(out), stop)
    with pytest.raises(Stopped):
        b.add_fd("a.log", open_fd(log), log.stat().st_size)
    b.close()
    with zipfile.ZipFile(out) as zf:
        assert zf.comment == b"PARTIAL: over budget"
        assert zf.read("results.txt").decode().splitlines()[1] == "PARTIAL: over budget"
        assert zf.read("a.log").endswith(b"[guestagent: collection stopped here: partial]\n")


def test_the_memory_watch_reads_anonymous_memory_and_a_budget():
    anon = memory.anon_bytes()
    assert 1 * MiB < anon < 500 * MiB
    watch = memory.Watch(anon_limit=1 * MiB)
    assert watch.check() is not None and "over the collector's budget" in watch.over
    roomy = memory.Watch(anon_limit=1 << 40)
    if memory.cgroup_limit() is None:
        assert roomy.check() is None and roomy.budget == 1 << 40


def test_the_scope_line_runs_our_dropper_in_the_slice():
    spec = table.build(defaults())["logcollector"]
    conf = defaults().with_overrides(Logs__CollectorCpuQuota=7,
                                     Logs__CollectorMemoryLimit=100 * MiB)
    argv = slices.scope_wrapper(spec, conf, spawn.Identity(1234, 5678), "/venv/bin/python")
    assert argv[0].endswith("systemd-run") or argv[0] is None
    assert argv[1] == "--scope" and "--slice=guestagent-logcollector.slice" in argv
    assert "--property=CPUQuota=7%" in argv and "--property=MemoryMax=%d" % (100 * MiB) in argv
    i = argv.index("--")
    assert argv[i + 1:] == ("/venv/bin/python", "-I", "-m", "spawner.drop", "1234", "5678",
                            str(os.getpid()), "--")
    assert not any(a.startswith("--uid") for a in argv)   # systemd's --uid keeps root's groups


@pytest.mark.skipif(os.geteuid() != 0, reason="drops from root")
def test_the_dropper_becomes_the_worker_with_nothing_of_roots():
    uid = pwd.getpwnam("guestagent-logs").pw_uid
    gid = pwd.getpwnam("guestagent-logs").pw_gid
    probe = ("import os; s = open('/proc/self/status').read(); "
             "print(repr(dict(l.split(':', 1) for l in s.splitlines()))); print(sorted(os.environ))")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "GUESTAGENT_WORKER": "logcollector",
           "SECRET_VAR": "x"}
    r = subprocess.run([sys.executable, "-I", "-m", "spawner.drop", str(uid), str(gid),
                        str(os.getpid()), "--", sys.executable, "-I", "-c", probe],
                       capture_output=True, text=True, env=env, timeout=60, cwd="/",
                       extra_groups=[0, 4])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    status = eval(lines[0])  # noqa: S307 - our own probe's repr
    assert status["Uid"].split() == [str(uid)] * 4 and status["Gid"].split() == [str(gid)] * 4
    assert status["Groups"].strip() == ""
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert eval(lines[1]) == ["GUESTAGENT_WORKER", "LANG", "PATH"]  # noqa: S307
    # Root is refused: the entry point only ever drops.
    r = subprocess.run([sys.executable, "-I", "-m", "spawner.drop", "0", "0", str(os.getpid()),
                        "--", "/bin/true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == spawn.SPAWN_FAILED and "not root" in r.stderr


def test_the_quick_clue_scan_misses_nothing_the_filter_redacts():
    from redaction import MARK, may_hold_secret, redact
    samples = ['"adminPassword": "x1"', "PASSWD=x2", "passphrase=x3", '"Secret": "x4"',
               '"protectedSettings": "x5"', "protected_settings=x6", "CustomData: x7",
               "custom_data=x8", "<![CDATA[x9]]>", "-----BEGIN RSA PRIVATE KEY-----\nMIIEx9\n",
               "https://h/c?sv=1&sig=x10", "url=https%3A%2F%2Fh%2Fc%3Fsig%3Dx11"]
    for text in samples:
        assert MARK in redact(text), text     # the filter touches it...
        assert may_hold_secret(text.encode()), text   # ...so the scan must not skip it
    assert not may_hold_secret(b"2026-12-04T09:00:00Z INFO enable succeeded seq=3\n" * 100)
