"""The extensions harness: the emulator as a real process on 127.0.0.1 and the whole agent in
a confined host (emulator/confinement.py: private mount namespace, /var/lib and /var/log bound
to fresh folders), so /var/lib/waagent and /var/log/azure are the real, hard-coded paths and
the machine's own are never touched. Extensions are the real-contract ones of
tests/data/extensions/ (shell and Python), served by the emulator as packages."""

import json
import os
import shutil
import tempfile
import time

import pytest

from emulator.confinement import GUESTAGENTD, ConfinedHost, Emulator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
DATA = os.path.join(ROOT, "tests", "data", "extensions")
SCENARIOS = os.path.join(ROOT, "emulator", "scenarios")

FAST = {
    "Provisioning.Agent": "disabled",
    "Extensions.GoalStatePeriod": "0.3",
    "Extensions.InstallTimeout": "20",
    "Extensions.EnableTimeout": "20",
    "Extensions.DisableTimeout": "20",
    "Extensions.UpdateTimeout": "20",
    "Extensions.UninstallTimeout": "20",
    "Agent.FlapMaxFailures": "10",
    "Agent.BackoffDelay": "0.2",
    "Agent.BackoffMaxDelay": "0.5",
}


def write_scenario(folder, **changes):
    with open(os.path.join(SCENARIOS, "default.json")) as f:
        scenario = json.load(f)
    for cert in scenario["certificates"]:
        for k in ("cert", "key"):
            cert[k] = os.path.join(SCENARIOS, cert[k])
    scenario["extensions"] = []
    scenario.update(changes)
    path = os.path.join(folder, "scenario.json")
    with open(path, "w") as f:
        json.dump(scenario, f)
    return path


class ExtensionsPlatform(Emulator):
    def add(self, name, folder, version="1.0.0", **spec):
        body = {"name": name, "version": version,
                "handler": folder if os.path.isabs(folder) else os.path.join(DATA, folder)}
        body.update(spec)
        return self.control("POST", "extensions", body)

    def latest(self):
        status = self.control("GET", "status")["latest_status"]
        return status["document"] if status else None

    def uploads(self):
        received = self.state()["received"]
        return [r for k, v in received.items() if k.lower() == "status" for r in v]

    def handler_entries(self, name):
        doc = self.latest() or {}
        return [h for h in doc.get("aggregateStatus", {}).get("handlerAggregateStatus", [])
                if h.get("handlerName") == name]

    def wait_handler(self, name, predicate, timeout=40.0, host=None):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            entries = self.handler_entries(name)
            last = entries
            if entries and predicate(entries[0]):
                return entries[0]
            time.sleep(0.1)
        raise AssertionError("no matching status for %s after %.0fs; last: %s\n%s" % (
            name, timeout, json.dumps(last)[:3000],
            host.log("extensions")[-4000:] + host.log("supervisor")[-3000:] if host else ""))


def ext_status(entry):
    rss = entry.get("runtimeSettingsStatus") or {}
    return ((rss.get("settingsStatus") or {}).get("status") or {})


@pytest.fixture
def folder():
    path = tempfile.mkdtemp(prefix="guestagent-ext-it.", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def platform(folder):
    emu = ExtensionsPlatform(write_scenario(folder))
    yield emu
    emu.stop()


@pytest.fixture
def make_host(platform):
    if os.geteuid() != 0:
        pytest.skip("the confined host needs root (namespaces, real users)")
    if not os.path.exists(GUESTAGENTD):
        pytest.fail("%s is missing: run `make venv` first" % GUESTAGENTD)
    hosts = []

    def make(conf=None, start=True, before=None):
        values = dict(platform.conf())
        values.update(FAST)
        values.update(conf or {})
        host = ConfinedHost(values)
        hosts.append(host)
        if before:
            before(host)
        if start:
            host.start()
        return host
    yield make
    for host in hosts:
        host.close()


def azure_log(host, handler, name):
    try:
        with open(os.path.join(host.log_dir, "azure", handler, name), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
