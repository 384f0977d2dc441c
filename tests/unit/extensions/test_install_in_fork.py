"""extensions.install extracts the package in a short-lived fork of the broker (issue 17):
the package lands whole, a hostile one is refused with its reason, and zipfile with what it
imports never loads in the supervisor, where it would stay for the life of the VM."""

import json
import os
import subprocess
import sys

from emulator.handler_packages import build_zip

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
GOOD = os.path.join(ROOT, "tests", "data", "extensions", "good")

# Run in a fresh interpreter, as the supervisor is: the test process has zipfile loaded.
SCRIPT = """
import json, os, sys, threading
sys.path.insert(0, %(root)r)
import config
from ipc.errors import IpcError
from supervisor.broker import Context
from supervisor.privileged import extensions
conf = config.load(%(conf)r, report=False)
out = {}
for name, package in (("Test.Good", %(good)r), ("Test.Slip", %(slip)r)):
    fd = os.open(package, os.O_RDONLY)
    try:
        out[name] = extensions.install(Context("extensions", conf, threading.Event(), [fd]),
                                       {"name": name, "version": "1.0.0"})
    except IpcError as e:
        out[name] = [e.code, e.message]
out["loaded"] = sorted(m for m in ("zipfile", "pathlib", "importlib.util") if m in sys.modules)
print(json.dumps(out))
"""


def test_the_package_is_extracted_in_a_fork_and_zipfile_never_loads_here(tmp_path):
    import zipfile
    lib = tmp_path / "lib"
    conf = tmp_path / "waagent.conf"
    conf.write_text("Lib.Dir=%s\n" % lib)
    good = tmp_path / "good.zip"
    good.write_bytes(build_zip(GOOD))
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        with open(os.path.join(GOOD, "HandlerManifest.json"), "rb") as f:
            zf.writestr("HandlerManifest.json", f.read())
        zf.writestr("../../evil.sh", "#!/bin/sh\n")
    run = subprocess.run(
        [sys.executable, "-I", "-c", SCRIPT % {"root": ROOT, "conf": str(conf),
                                               "good": str(good), "slip": str(slip)}],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["Test.Good"]["existed"] is False and out["Test.Good"]["files"] > 1, out
    folder = lib / "Test.Good-1.0.0"
    assert (folder / "HandlerManifest.json").is_file()
    assert out["Test.Slip"][0] == "FAILED" and "zip-slip" in out["Test.Slip"][1], out
    assert sorted(os.listdir(lib)) == ["Test.Good-1.0.0"]   # no temporary folder left
    assert not (tmp_path / "evil.sh").exists()
    assert out["loaded"] == [], out
