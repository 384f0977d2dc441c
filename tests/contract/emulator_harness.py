"""Helpers for the emulator's contract tests: start a real `python -m emulator serve` process on
127.0.0.1 and read its announced ports from the one JSON line it prints."""
import json
import os
import signal
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "data", "walinuxagent")
SCENARIOS = os.path.join(REPO, "emulator", "scenarios")
DEFAULT_SCENARIO = os.path.join(SCENARIOS, "default.json")
PYTHON = sys.executable


class RunningEmulator:
    def __init__(self, proc, info):
        self.proc = proc
        self.info = info
        self.ws = info["wireserver_url"]
        self.hgap = info["hostgaplugin_url"]
        self.imds = info["imds_url"]

    def state(self):
        import requests
        return requests.get(self.ws + "/_emulator/state", timeout=10).json()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()


def start_emulator(*args):
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen([PYTHON, "-m", "emulator", "serve"] + list(args), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=err, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        err.seek(0)
        raise RuntimeError("emulator did not start: %s" % err.read(65536).decode(errors="replace"))
    err.close()
    return RunningEmulator(proc, json.loads(line))


WS_HEADERS = {"x-ms-agent-name": "WALinuxAgent", "x-ms-version": "2012-11-30", "Connection": "close"}
