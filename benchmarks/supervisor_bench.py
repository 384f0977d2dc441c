"""Shared by the supervisor benchmarks: start a real guestagentd with a temporary config."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

VENV = os.environ.get("GUESTAGENT_VENV", "/opt/guestagent")
GUESTAGENTD = os.path.join(VENV, "bin", "guestagentd")
PYTHON = os.path.join(VENV, "bin", "python")


def settled(w) -> bool:
    """Up: a resident worker RUNNING, a once-per-boot one done, a periodic one between runs."""
    lifetime = w.get("lifetime", "service")
    if lifetime == "service":
        return w["state"] == "RUNNING"
    if lifetime == "once":
        return w["state"] in ("EXITED", "FATAL")
    return w["state"] in ("STOPPED", "EXITED")


class Tree:
    def __init__(self, **overrides):
        self.dir = tempfile.mkdtemp(prefix="guestagent-bench-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "waagent.conf")
        values = {"Agent.RuntimeDir": self.dir + "/run", "Agent.LogDir": self.dir + "/log",
                  "Pid.File": self.dir + "/waagent.pid",
                  "Agent.StateDir": self.dir + "/state", "Logs.Console": "n"}
        values.update({k.replace("__", "."): v for k, v in overrides.items()})
        with open(self.conf, "w") as f:
            f.writelines("%s=%s\n" % kv for kv in values.items())
        os.chmod(self.conf, 0o644)
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([GUESTAGENTD, "--config", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.channel = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if all(settled(w) for w in self.status()["workers"]):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the tree did not come up")

    def status(self):
        from ipc.channel import Channel
        from ipc import framing
        if self.channel is None:
            self.channel = Channel.connect(os.path.join(self.dir, "run", "control.sock"),
                                           framing.CONTROL_CAP)
        result, _ = self.channel.call("control.status", {})
        return result

    def __exit__(self, *exc):
        if self.channel is not None:
            self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)
