"""The certificates for extensions (issue 13 §7): the extensions worker decrypts the goal
state's Certificates and hands them to the broker (`platform.install_certificates`), which
writes Lib.Dir/<THUMBPRINT>.crt|.prv (root, 0600) and removes those that left the goal state —
only files it wrote itself. An extension then decrypts its protectedSettings with them exactly
as real ones do (`openssl cms -decrypt -inform DER -recip <TP>.crt -inkey <TP>.prv`).

Every call comes from a real worker process under its own uid on its own channel, its code
replaced by the script (workers/base.py _TestHooks.attack), against the real supervisor and the
emulator's WireServer on 127.0.0.1. Lib.Dir is the harness's folder (the config key waagent
has for /var/lib/waagent), so no test writes the host's."""

import base64
import json
import os
import shutil
import stat
import subprocess
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from emulator import tenant_certs
from tests.integration.security.test_secrets import (platform_agent, records_of,  # noqa: F401
                                                     supervisor_log)

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl plays the extension")

# Decrypt the goal state's Certificates the legitimate way and install them.
INSTALL = """
import os
from config import load
from workers.platform import PlatformClient
from workers.platform.certificates import install_for_extensions
conf = load(os.environ["GUESTAGENT_CONFIG"], report=False)
client = PlatformClient.for_worker(worker, conf)
installed, removed = install_for_extensions(worker, client.certificates())
report("installed", installed)
report("removed", removed)
"""

WS_HEADERS = {"x-ms-agent-name": "WALinuxAgent", "x-ms-version": "2012-11-30"}


def lib(agent, *parts):
    return os.path.join(agent.dir, "lib", *parts)


def ws_get(emu, url):
    req = urllib.request.Request(url, headers=WS_HEADERS)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read(16 << 20)


def protected_settings(emu):
    """(thumbprint, DER CMS) of the first extension's protectedSettings, as the goal state
    carries them."""
    gs = ET.fromstring(ws_get(emu, emu.url + "/machine/?comp=goalstate"))
    url = gs.find("Container/RoleInstanceList/RoleInstance/Configuration/ExtensionsConfig").text
    doc = ET.fromstring(ws_get(emu, url))
    settings = json.loads(doc.find("PluginSettings/Plugin/RuntimeSettings").text)
    handler = settings["runtimeSettings"][0]["handlerSettings"]
    return handler["protectedSettingsCertThumbprint"], base64.b64decode(handler["protectedSettings"])


def install(agent):
    records = agent.attack("extensions", INSTALL, timeout=60)
    assert records[-1]["key"] == "done", records
    return records_of(records)


def owner_mode(path):
    st = os.lstat(path)
    return st.st_uid, stat.S_IMODE(st.st_mode), stat.S_ISREG(st.st_mode)


@needs_openssl
def test_an_extension_decrypts_its_protected_settings_with_what_the_broker_wrote(
        platform_agent, emu, tmp_path):
    agent = platform_agent
    by_key = install(agent)
    thumbprints = [c["thumbprint"] for c in emu.state()["vm"]["certificates"]]
    assert sorted(by_key["installed"]) == sorted(thumbprints)
    for tp in thumbprints:
        for suffix in (".crt", ".prv"):
            assert owner_mode(lib(agent, tp + suffix)) == (0, 0o600, True), tp + suffix
    assert owner_mode(lib(agent))[:2] == (0, 0o700)
    # The broker checked each thumbprint itself, with CPython's own SHA-1: the resident
    # supervisor still maps neither cryptography nor OpenSSL (its memory is the figure that
    # matters, issue 17).
    with open("/proc/%d/maps" % agent.proc.pid) as f:
        maps = f.read()
    assert "cryptography" not in maps and "libcrypto" not in maps and "_hashlib" not in maps

    # The extension's side, exactly as real ones do it.
    tp, der = protected_settings(emu)
    blob = tmp_path / "protected.der"
    blob.write_bytes(der)
    out = subprocess.run([OPENSSL, "cms", "-decrypt", "-inform", "DER", "-in", str(blob),
                          "-recip", lib(agent, tp + ".crt"), "-inkey", lib(agent, tp + ".prv")],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"secret": "only-the-extension-reads-this"}

    # A rotated certificate: the new one is written, the old one (the broker's) removed.
    rotated = emu.control("POST", "certificates/settings/rotate")["result"]
    by_key = install(agent)
    assert by_key["removed"] == [rotated["old_thumbprint"]]
    assert not os.path.exists(lib(agent, rotated["old_thumbprint"] + ".crt"))
    assert not os.path.exists(lib(agent, rotated["old_thumbprint"] + ".prv"))
    assert os.path.exists(lib(agent, rotated["new_thumbprint"] + ".prv"))
    # ... and the new protectedSettings decrypt with the new files
    tp, der = protected_settings(emu)
    assert tp == rotated["new_thumbprint"]
    blob.write_bytes(der)
    out = subprocess.run([OPENSSL, "cms", "-decrypt", "-inform", "DER", "-in", str(blob),
                          "-recip", lib(agent, tp + ".crt"), "-inkey", lib(agent, tp + ".prv")],
                         capture_output=True, timeout=60)
    assert json.loads(out.stdout) == {"secret": "only-the-extension-reads-this"}


def cert_item(t, key=True):
    return {"thumbprint": t.thumbprint, "certificate": t.cert_pem(),
            "private_key": t.key_pem() if key else None}


def test_the_extensions_worker_cannot_name_follow_or_remove_what_it_should_not(agent, tmp_path):
    one, two, foreign = (tenant_certs.generate(n) for n in ("one", "two", "foreign"))
    folder = lib(agent)
    os.makedirs(folder, 0o700, exist_ok=True)
    # Root's files in Lib.Dir the broker did not write: waagent's certificate, the marker.
    with open(os.path.join(folder, foreign.thumbprint + ".crt"), "w") as f:
        f.write(foreign.cert_pem())
    with open(os.path.join(folder, "provisioned"), "w") as f:
        f.write("vm id\n")
    # An entry of Lib.Dir that is a symlink to a root file elsewhere.
    shadow = os.path.join(agent.dir, "shadow")
    with open(shadow, "w") as f:
        f.write("root:secret\n")
    os.chmod(shadow, 0o600)
    os.symlink(shadow, os.path.join(folder, one.thumbprint + ".prv"))
    before = set(os.listdir(folder))

    script = "import json\nCERTS = json.loads(%r)\n" % json.dumps(
        {"one": cert_item(one), "two": cert_item(two), "foreign": cert_item(foreign)}) + """
report("uid", os.getuid())
one, two, foreign = CERTS["one"], CERTS["two"], CERTS["foreign"]
lying = dict(one, thumbprint=two["thumbprint"])
attempt("platform.install_certificates", {"certificates": [lying]})
attempt("platform.install_certificates", {"certificates": [one]})
# writing the folder itself is root's
try:
    open(os.path.join(LIB, "planted.crt"), "w")
    report("direct_write", "ok")
except OSError as e:
    report("direct_write", e.errno)
# the whole set is now empty: only the broker's own files may go
attempt("platform.install_certificates", {"certificates": []})
# a name that is not a thumbprint: a violation, the worker ends here
attempt("platform.install_certificates", {"certificates": [dict(one, thumbprint="../x")]})
report("survived", True)
""".replace("LIB", repr(folder))
    records = agent.attack("extensions", script, timeout=60)
    by_key = {}
    for r in records:
        by_key.setdefault(r["key"], []).append(r["value"])
    calls = by_key["platform.install_certificates"]
    # The lie: refused, nothing written under either name.
    assert calls[0][0] == "error" and calls[0][1] == "FAILED" and "SHA-1" in calls[0][2]
    # The honest call: written, the symlink replaced and never followed.
    assert calls[1] == ["ok", {"installed": [one.thumbprint], "removed": []}]
    # Empty set: its own file removed, root's files kept.
    assert calls[2] == ["ok", {"installed": [], "removed": [one.thumbprint]}]
    assert by_key["direct_write"][0] == 13        # EACCES
    # `../x`: INVALID_ARGS, the worker ended before it could go on.
    assert "survived" not in by_key
    assert records[-1]["key"] == "killed"
    with open(shadow) as f:
        assert f.read() == "root:secret\n"
    assert owner_mode(shadow) == (0, 0o600, True)
    assert set(os.listdir(folder)) == before - {one.thumbprint + ".prv"}
    with open(os.path.join(folder, foreign.thumbprint + ".crt")) as f:
        assert f.read() == foreign.cert_pem()
    assert not os.path.exists(os.path.join(agent.dir, "x"))
    log = supervisor_log(agent)
    assert "event=security worker=extensions" in log
    assert "code=INVALID_ARGS" in log
    agent.wait_state("monitoring", "RUNNING")


def test_the_record_outlives_a_supervisor_restart(agent):
    """What the broker wrote is on its disk: after a restart it still removes its own file
    (and still never a file it did not write)."""
    one = tenant_certs.generate("one")
    script = "import json\nONE = json.loads(%r)\n" % json.dumps(cert_item(one)) + """
report("uid", os.getuid())
attempt("platform.install_certificates", {"certificates": [ONE]})
"""
    records = agent.attack("extensions", script, timeout=60)
    assert records_of(records)["platform.install_certificates"][0] == "ok"
    assert os.path.exists(lib(agent, one.thumbprint + ".crt"))
    agent.stop()
    agent.start()
    records = agent.attack("extensions", """
report("uid", os.getuid())
attempt("platform.install_certificates", {"certificates": []})
""", timeout=60)
    assert records_of(records)["platform.install_certificates"] == \
        ["ok", {"installed": [], "removed": [one.thumbprint]}]
    assert not os.path.exists(lib(agent, one.thumbprint + ".crt"))


@pytest.mark.parametrize("caller", ["monitoring", "logcollector", "provisioning"])
def test_only_the_extensions_worker_may_install_certificates(agent, caller):
    one = tenant_certs.generate("one")
    script = "import json\nONE = json.loads(%r)\n" % json.dumps(cert_item(one)) + """
report("uid", os.getuid())
attempt("platform.install_certificates", {"certificates": [ONE]})
"""
    records = agent.attack(caller, script, timeout=60)
    by_key = records_of(records)
    assert by_key.get("platform.install_certificates", ["closed"])[0] == "closed"
    assert records[-1]["key"] == "killed"
    assert not os.path.exists(lib(agent, one.thumbprint + ".crt"))
    log = supervisor_log(agent)
    assert "event=security worker=%s" % caller in log
    assert "verb=platform.install_certificates" in log
    agent.wait_state("extensions", "RUNNING")


@needs_openssl
def test_in_the_real_var_lib_waagent_an_extension_decrypts_as_real_ones_do(emu, tmp_path):
    """The whole agent in a private mount namespace over an empty /var/lib
    (emulator/confinement.py), Lib.Dir at its default: the real extensions worker installs the
    goal state's certificates and `openssl cms`, run in that namespace with the paths real
    extensions use, decrypts the emulator's protectedSettings."""
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    from emulator.confinement import ConfinedHost
    host = ConfinedHost(dict(emu.conf(), **{"Provisioning.Agent": "disabled",
                                            "Agent.TestHooks": "y"}))
    try:
        hooks = host.path("hooks")
        os.mkdir(hooks, 0o755)
        results = os.path.join(hooks, "results")
        os.mkdir(results)
        os.chmod(results, 0o1777)
        with open(os.path.join(hooks, "extensions.attack.py"), "w") as f:
            f.write('report("uid", os.getuid())\n' + INSTALL)
        with open(os.path.join(hooks, "extensions"), "w") as f:
            f.write("attack\n")
        host.start(extra_env={"GUESTAGENT_TEST_DIR": hooks})

        def finished():
            try:
                with open(os.path.join(results, "extensions.jsonl")) as f:
                    records = [json.loads(line) for line in f if line.strip()]
            except FileNotFoundError:
                return None
            first = [r for r in records if r["pid"] == records[0]["pid"]] if records else []
            return first if first and first[-1]["key"] in ("done", "crashed") else None
        from tests.integration.supervisor_harness import wait_for
        records = wait_for(finished, 60, 0.1, "the extensions worker to install the certificates")
        os.unlink(os.path.join(hooks, "extensions"))    # its restarts run the job, not the script
        assert records[-1]["key"] == "done", records + [host.all_logs()[-3000:]]
        installed = records_of(records)["installed"]
        assert sorted(installed) == sorted(c["thumbprint"] for c in emu.state()["vm"]["certificates"])
        assert owner_mode(host.lib())[:2] == (0, 0o700)
        for tp in installed:
            assert owner_mode(host.lib(tp + ".crt")) == (0, 0o600, True)

        tp, der = protected_settings(emu)
        blob = host.path("protected.der")
        with open(blob, "wb") as f:
            f.write(der)
        out = host.run_inside([OPENSSL, "cms", "-decrypt", "-inform", "DER", "-in", blob,
                               "-recip", "/var/lib/waagent/%s.crt" % tp,
                               "-inkey", "/var/lib/waagent/%s.prv" % tp])
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"secret": "only-the-extension-reads-this"}
        # and outside the namespace the host's /var/lib/waagent never saw them
        assert not os.path.exists("/var/lib/waagent/%s.prv" % tp)
    finally:
        host.close()
