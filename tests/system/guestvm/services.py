"""The platform on the host side: the project's emulator (WireServer, HostGAPlugin, IMDS) on
127.0.0.1, which the VM reaches as 10.0.2.100 through QEMU's guestfwd (see vm.py)."""

import json
import os
import select
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .image import GUEST_PORTS, PROJECT, WIRE_ADDRESS


class Emulator:
    """``python -m emulator serve --scenario FILE --advertise 10.0.2.100`` from the checkout."""

    def __init__(self, scenario, logdir, python=None, extra_args=()):
        self.scenario = Path(scenario)
        self.logdir = Path(logdir)
        self.python = python or sys.executable
        self.extra_args = list(extra_args)
        self.proc = None
        self.info = None

    def start(self, timeout=60):
        self.logdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(PROJECT))
        self.proc = subprocess.Popen(
            [self.python, "-m", "emulator", "serve", "--scenario", str(self.scenario),
             "--bind", "127.0.0.1", "--advertise", WIRE_ADDRESS] + self.extra_args,
            cwd=PROJECT, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            stderr=open(self.logdir / "emulator.log", "wb"), start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            log = (self.logdir / "emulator.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the emulator announced nothing within {timeout}s:\n{log}")
        self.info = json.loads(line)
        # Keep draining stdout so the emulator never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        return self

    @property
    def forwards(self):
        """guest port on 10.0.2.100 -> host port on 127.0.0.1"""
        return {GUEST_PORTS[role]: self.info[f"{role}_port"] for role in GUEST_PORTS}

    def media(self, out, iso=False):
        """The provisioning DVD's files for this scenario (``python -m emulator media``): an
        ovf-env.xml whose user, keys and certificates match what this emulator serves. With
        ``iso``, the emulator's own ISO 9660 + UDF image of them (its path is returned)."""
        env = dict(os.environ, PYTHONPATH=str(PROJECT))
        subprocess.run([self.python, "-m", "emulator", "media", "--scenario", str(self.scenario),
                        "--out", str(out)] + ([] if iso else ["--no-iso"]), cwd=PROJECT,
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return Path(out) / "ovf-env.iso" if iso else Path(out)

    @property
    def state_url(self):
        return self.info["state_url"]

    def state(self):
        import urllib.request
        with urllib.request.urlopen(self.state_url, timeout=30) as r:
            return json.loads(r.read())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class _Stub(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"guestvm stub\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_GET

    def log_message(self, *a):
        pass


class StubPlatform:
    """An HTTP server answering 200 to anything, on every platform port: for scenarios that do
    not need a platform at all."""

    def __init__(self):
        self.servers = {}

    def start(self):
        for role in GUEST_PORTS:
            srv = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self.servers[role] = srv
        return self

    @property
    def forwards(self):
        return {GUEST_PORTS[r]: s.server_address[1] for r, s in self.servers.items()}

    def media(self, out):
        return Path(__file__).resolve().parent.parent / "data" / "ovf-env.xml"

    def stop(self):
        for s in self.servers.values():
            s.shutdown()
            s.server_close()
