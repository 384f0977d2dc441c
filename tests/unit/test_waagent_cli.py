"""The `waagent` command line as scripts and extensions call it."""

import subprocess
import sys

import pytest

from cli import waagent
from tests.conftest import ROOT


@pytest.mark.parametrize("argv, verb, flags", [
    (["-version"], "version", set()),
    (["--version"], "version", set()),
    (["/version"], "version", set()),
    (["-deprovision+user", "-force"], "deprovision+user", {"force"}),
    (["-collect-logs", "-full"], "collect-logs", {"full"}),
    (["-verbose", "-daemon"], "daemon", {"verbose"}),
    (["-setup-firewall=168.63.129.16"], "setup-firewall", set()),
    (["-nonsense", "-version"], "help", set()),
])
def test_arguments_are_read_as_waagent_reads_them(argv, verb, flags):
    inv = waagent.parse_args(argv)
    assert (inv.verb, inv.flags) == (verb, flags)


def test_configuration_path_must_exist_and_be_plain(tmp_path):
    assert "does not exist" in waagent.parse_args(["-configuration-path:/nope.conf"]).error
    assert "invalid" in waagent.parse_args(["-configuration-path:/etc/a b"]).error
    conf = tmp_path / "w.conf"
    conf.write_text("Logs.Verbose=y\n")
    assert waagent.parse_args(["-configuration-path:%s" % conf]).config_path == str(conf)


def run(*args):
    return subprocess.run([sys.executable, "-m", "cli.waagent", *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_version_and_help():
    out = run("-version")
    assert out.returncode == 0 and out.stdout.startswith("WALinuxAgent-2.")
    assert "Python: " in out.stdout
    assert run("-help").returncode == 0
    bad = run("-frobnicate")
    assert bad.returncode == 2 and "usage: waagent" in bad.stdout


def test_show_configuration_prints_every_key_and_reports_problems(fixtures_dir):
    out = run("-show-configuration", "-configuration-path:%s" % (fixtures_dir / "test_waagent.conf"))
    assert out.returncode == 1
    assert "OS.SshClientAliveInterval = 42" in out.stdout
    assert "Provisioning.DeleteRootPassword = y" in out.stdout
    lines = out.stdout.splitlines()
    assert lines == sorted(lines)
    assert "test_waagent.conf:7: FauxKey1: unknown key" in out.stderr


def test_importing_the_module_has_no_side_effects():
    # Extensions load /usr/sbin/waagent with imp.load_source: nothing may run on import.
    out = subprocess.run([sys.executable, "-c",
                          "import importlib.util,sys;"
                          "s=importlib.util.spec_from_file_location('w', %r);"
                          "m=importlib.util.module_from_spec(s);s.loader.exec_module(m);"
                          "print(sorted(k for k in sys.modules if k.startswith('supervisor')))"
                          % str(ROOT / "cli" / "waagent.py")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]" and out.stderr == ""


def test_installed_usr_sbin_waagent_imports_under_the_system_python(tmp_path):
    # What `make install` writes to /usr/sbin/waagent, loaded the way extensions load it: by a
    # python that has none of guestagent's packages, from a folder that holds none of them.
    script = tmp_path / "waagent"
    script.write_text((ROOT / "cli" / "usr-sbin-waagent.in").read_text()
                      .replace("@VENV@", "/opt/guestagent"))
    out = subprocess.run(["/usr/bin/python3", "-I", "-c",
                          "import importlib.machinery as m, sys;"
                          "w=m.SourceFileLoader('waagent', %r).load_module();"
                          "print(callable(w.main), 'cli' in sys.modules)" % str(script)],
                         capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True False" and out.stderr == ""


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`waagent -version | head -c1`: the pipe closes before waagent writes; it exits 0 and
    says nothing on stderr, as cat does."""
    import os
    r, w = os.pipe()
    p = subprocess.Popen([sys.executable, "-m", "cli.waagent", "-version"], cwd=ROOT,
                         stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    os.close(r)   # before the interpreter has even started: every write gets EPIPE
    _, err = p.communicate(timeout=60)
    assert (p.returncode, err.decode()) == (0, "")


# -provision and -run-exthandlers start their worker: tests/integration/test_waagent_verbs.py.
@pytest.mark.parametrize("verb, instead", [
    ("-setup-firewall=168.63.129.16", "set OS.EnableFirewall=y in /etc/waagent.conf and run "
     "`systemctl restart guestagent.service`"),
])
def test_verbs_done_by_workers_say_what_to_run_instead(verb, instead):
    out = run(verb)
    assert out.returncode == 3
    assert instead in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_deprovision_refuses_a_non_root_caller():
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-m", "cli.waagent", "-deprovision", "-force"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and "must run as root" in out.stderr


EXTENSION_HELPER = r'''
import imp, json, sys, warnings
# As Azure/azure-linux-extensions' Utils/WAAgentUtil.py and Utils/HandlerUtil.py do.
waagent = imp.load_source("waagent", sys.argv[1])
from waagent import LoggerInit
fallbacks = [n for n in ("AddExtensionEvent", "WALAEventOperation") if not hasattr(waagent, n)]
proxy = waagent.ConfigurationProvider(sys.argv[3])
LoggerInit(sys.argv[2] + "/extension.log", sys.argv[2] + "/console.log")
waagent.Log("enabling")
waagent.Error("a failure")
ok = waagent.SetFileContents(sys.argv[2] + "/mrseq", "7")
bad = waagent.SetFileContents(sys.argv[2] + "/no/such/folder/x", "7")
code, text = waagent.RunSendStdin("tr a-z A-Z", b"secret settings")
print(json.dumps({"lib": waagent.LibDir, "seq": waagent.GetFileContents(sys.argv[2] + "/mrseq"),
                  "ok": ok, "bad": bad, "missing": waagent.GetFileContents("/nonexistent"),
                  "run": [code, text], "fallbacks": fallbacks,
                  "proxy": [proxy.get("HttpProxy.Host"), proxy.get("HttpProxy.Port"),
                            proxy.get("HttpProxy.Nothing")],
                  "guestagent": sorted(m for m in sys.modules if m.split(".")[0] in
                                       ("cli", "supervisor", "workers", "config"))}))
'''


def test_extension_helpers_load_usr_sbin_waagent_and_find_what_they_use(tmp_path):
    # Under the system python (no guestagent package importable), with imp.load_source as the
    # helpers call it: every waagent name they use without a fallback is there and works.
    script = tmp_path / "waagent"
    script.write_text((ROOT / "cli" / "usr-sbin-waagent.in").read_text()
                      .replace("@VENV@", "/opt/guestagent"))
    conf = tmp_path / "waagent.conf"
    conf.write_text("HttpProxy.Host=proxy.example  # a comment\nHttpProxy.Port=3128\n")
    helper = tmp_path / "helper.py"
    helper.write_text(EXTENSION_HELPER)
    out = subprocess.run(["/usr/bin/python3", "-I", "-W", "ignore::DeprecationWarning",
                          str(helper), str(script), str(tmp_path), str(conf)],
                         capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    import json
    got = json.loads(out.stdout)
    assert got == {"lib": "/var/lib/waagent", "seq": "7", "ok": 0, "bad": None, "missing": None,
                   "run": [0, "SECRET SETTINGS"],
                   "fallbacks": ["AddExtensionEvent", "WALAEventOperation"],
                   "proxy": ["proxy.example", "3128", None], "guestagent": []}
    log = (tmp_path / "extension.log").read_text()
    assert "INFO:enabling" in log and "ERROR:a failure" in log
    assert "INFO:enabling" in (tmp_path / "console.log").read_text()


def test_start_is_a_no_op_when_a_supervisor_answers_and_reports_a_failed_start(tmp_path,
                                                                               monkeypatch):
    # `waagent -start`: the control socket of *this* configuration is asked first; a
    # supervisor that answers there is not started twice.
    import socket
    conf = tmp_path / "w.conf"
    conf.write_text("Agent.RuntimeDir=%s\n" % tmp_path)
    calls = []
    monkeypatch.setattr(waagent.subprocess, "call", lambda argv, **kw: calls.append(argv) or 2)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "control.sock"))
    listener.listen(1)
    try:
        assert waagent.start_detached(str(conf)) == 0 and calls == []
    finally:
        listener.close()
    # Nobody answers: guestagentd --daemonize is run, and its failure is the answer.
    (tmp_path / "control.sock").unlink()
    assert waagent.start_detached(str(conf), timeout=0.2) == 2
    assert calls and calls[0][1:4] == ["-m", "supervisor.daemon", "--daemonize"]
    assert calls[0][-2:] == ["--config", str(conf)]
