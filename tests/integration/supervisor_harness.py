"""The integration harness: the real guestagentd, real workers under their own users, real
sockets (CI runs as root).

Each test gets a fresh supervisor with a temporary waagent.conf: short heartbeat, backoff and
stop timings, and Agent.TestHooks=y so the workers obey GUESTAGENT_TEST_DIR/<worker> (see
workers/base.py _TestHooks). Folders the workers must reach sit under /tmp with 0755 parents
(pytest's own tmp_path is under a 0700 folder).
"""

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

VENV = os.environ.get("GUESTAGENT_VENV", "/opt/guestagent")
GUESTAGENTD = os.path.join(VENV, "bin", "guestagentd")
AGENTCTL = os.path.join(VENV, "bin", "agentctl")
PYTHON = os.path.join(VENV, "bin", "python")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKERS = ("provisioning", "monitoring", "extensions", "logcollector")
# Resident services; provisioning runs once per boot and exits, logcollector is periodic and
# on demand (supervisor/table.py lifetimes).
RESIDENT = ("monitoring", "extensions")

FAST = {
    "Agent.HeartbeatInterval": "0.2",
    "Agent.HeartbeatMisses": "3",
    "Agent.ReadyTimeout": "15",
    "Agent.BackoffDelay": "0.1",
    "Agent.BackoffMaxDelay": "0.4",
    "Agent.FlapWindow": "20",
    "Agent.FlapMaxFailures": "4",
    "Agent.FatalRetryPeriod": "0",
    "Agent.StopTimeout": "3",
    "Agent.MemoryCheckPeriod": "0.5",
    # Room for a run of the log collector (a logs.open line per file) before a rotation
    # hides what a test looks for; the rotation tests set 4096 themselves (SMALL_LOGS).
    "Agent.LogMaxBytes": "262144",
    "Agent.LogBackups": "2",
    "Agent.TestHooks": "y",
    # The log collector runs when a test asks (agentctl collect-logs), not on its own timer,
    # without the 5 % CPU quota that would make each run last seconds here.
    "Debug.LogCollectorInitialDelay": "3600",
    "Logs.CollectorCpuQuota": "100",
    # Keep the provisioning worker's job local and quick: no platform here, nothing to
    # provision (its own tests drive it against the emulator).
    "Provisioning.Agent": "disabled",
    "Protocol.Endpoint": "127.0.0.1:9",
    "Protocol.DetectionAttempts": "1",
    "Protocol.HttpAttempts": "1",
    "Protocol.RetryDelay": "0",
    "Protocol.HttpTimeout": "0.5",
    "DVD.Device": "/nonexistent",
}


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


def settled(w):
    if w["name"] in RESIDENT:
        return w["state"] == "RUNNING"
    if w["name"] == "provisioning":
        return w["state"] == "EXITED"
    return w["state"] in ("STOPPED", "EXITED")


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="session")
def accounts():
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (real users, real uid switches)")
    if not os.path.exists(GUESTAGENTD):
        pytest.fail("%s is missing: run `make venv` first" % GUESTAGENTD)
    subprocess.run([sys.executable, "-m", "cli.accounts", "install",
                    os.path.join(ROOT, "systemd", "guestagent.sysusers.conf")],
                   check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    return True


class Agent:
    def __init__(self, base, overrides=None):
        self.dir = base
        self.run_dir = os.path.join(base, "run")
        self.log_dir = os.path.join(base, "log")
        self.state_dir = os.path.join(base, "state")
        self.test_dir = os.path.join(base, "hooks")
        os.mkdir(self.test_dir, 0o755)
        os.chmod(self.test_dir, 0o755)
        self.conf = os.path.join(base, "waagent.conf")
        self.console = os.path.join(base, "console")
        open(self.console, "w").close()
        self.stderr_path = os.path.join(base, "stderr")
        self.write_conf(overrides or {})
        self.proc = None
        self.pids_seen = set()

    def write_conf(self, overrides, extra_lines=()):
        values = dict(FAST)
        # The system console stand-in: never the host's /dev/console.
        # Lib.Dir too: with the agent disabled the broker writes the provisioned marker there
        # at start (protocol.md §3.1), and a test must never write the host's /var/lib/waagent.
        values.update({"Agent.RuntimeDir": self.run_dir, "Agent.LogDir": self.log_dir,
                       "Agent.StateDir": self.state_dir, "Lib.Dir": os.path.join(self.dir, "lib"),
                       # Pid.File too: never the host's /var/run/waagent.pid.
                       "Pid.File": os.path.join(self.dir, "waagent.pid"),
                       "Logs.ConsoleDevice": self.console,
                       # The collector's /etc and /var/log: an empty tree, never the host's.
                       "Logs.CollectRoot": os.path.join(self.dir, "sysroot")})
        values.update(overrides)
        with open(self.conf, "w") as f:
            for k, v in values.items():
                f.write("%s=%s\n" % (k, v))
            for line in extra_lines:
                f.write(line + "\n")
        os.chmod(self.conf, 0o644)

    def start(self, wait=True, env=None, args=(), prefix=()):
        """prefix: a command that runs guestagentd, e.g. `ip netns exec NS unshare --uts`."""
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "GUESTAGENT_TEST_DIR": self.test_dir}
        environ.update(env or {})
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(list(prefix) + [GUESTAGENTD, "--config", self.conf] +
                                     list(args),
                                     stdin=subprocess.DEVNULL, stdout=self._stderr,
                                     stderr=self._stderr, env=environ)
        if wait:
            self.wait_all_running()
        return self

    # ---- observing ----------------------------------------------------------------------
    def ctl(self, *args, user=None, timeout=60):
        cmd = [AGENTCTL, "--config", self.conf] + list(args)
        if user is not None:
            pw = pwd.getpwnam(user)
            kwargs = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=os.getgrouplist(
                user, pw.pw_gid))
        else:
            kwargs = {}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)

    def status(self):
        r = self.ctl("status", "--json")
        assert r.returncode in (0, 6), r.stderr
        data = json.loads(r.stdout)
        for w in data["workers"]:
            if w["pid"]:
                self.pids_seen.add(w["pid"])
        return data

    def workers(self):
        return {w["name"]: w for w in self.status()["workers"]}

    def worker(self, name):
        return self.workers()[name]

    def wait_all_running(self, timeout=30):
        """Wait for the tree to settle: the resident workers RUNNING, provisioning done
        (EXITED), the periodic logcollector between runs."""
        def check():
            r = self.ctl("status", "--json")
            if r.returncode == 3:   # not up yet
                return None
            workers = json.loads(r.stdout)["workers"]
            for w in workers:
                self.pids_seen.add(w["pid"]) if w["pid"] else None
            return workers if all(settled(w) for w in workers) else None
        return wait_for(check, timeout, 0.1, "resident workers RUNNING, provisioning done")

    def pids(self):
        """{name: pid} of the workers that have a process now."""
        return {n: w["pid"] for n, w in self.workers().items() if w["pid"]}

    def wait_state(self, name, state, timeout=15, pid_not=None):
        def check():
            w = self.worker(name)
            if w["state"] == state and (pid_not is None or w["pid"] != pid_not):
                return w
            return None
        return wait_for(check, timeout, 0.05, "%s %s" % (name, state))

    def socket_up(self):
        return os.path.exists(os.path.join(self.run_dir, "control.sock"))

    def behave(self, worker, text):
        path = os.path.join(self.test_dir, worker)
        with open(path, "w") as f:
            f.write(text + "\n")
        os.chmod(path, 0o644)

    def start_attack(self, worker, code, start=True):
        """Replace `worker`'s code with `code` (workers/base.py _TestHooks.attack) and (re)start
        it: the script runs as that worker, under its own uid, on its own channel. Returns
        at once; attack() waits for the end, attack_records() reads what it reported."""
        if start:
            # Stop it first: a resident worker restarted on its own between the hook being
            # written and our restart would run the script and then be ended by that restart.
            self.ctl("stop", worker)
        results = os.path.join(self.test_dir, "results")
        os.makedirs(results, exist_ok=True)
        os.chmod(results, 0o1777)
        out = os.path.join(results, worker + ".jsonl")
        if os.path.exists(out):
            os.unlink(out)
        path = os.path.join(self.test_dir, worker + ".attack.py")
        with open(path, "w") as f:
            f.write(code)
        os.chmod(path, 0o644)
        self.behave(worker, "attack")
        if start:
            r = self.ctl("start", worker)
            # A worker killed for a violation before it was RUNNING fails the restart: fine.
            assert r.returncode in (0, 1, 6), r.stderr

    def attack(self, worker, code, timeout=30, start=True):
        """start_attack(), then wait: returns the records the script reported
        ({"key", "value", "pid"}), the last being `done`, `crashed`, or `killed` (the process
        ended before the script did: the supervisor ended it). The script must report
        something first (e.g. its uid), so its pid is known."""
        self.start_attack(worker, code, start)

        def finished():
            records = self.attack_records(worker)
            # The first process that ran the script is the attack; a resident worker
            # restarted after it finds the results file claimed and behaves (workers/base.py).
            pid = records[0]["pid"] if records else None
            records = [r for r in records if r["pid"] == pid]
            if records and records[-1]["key"] in ("done", "crashed"):
                return records
            if pid and not pid_alive(pid):   # ended mid-script: the supervisor killed it
                return records + [{"key": "killed", "value": None, "pid": pid}]
            return None
        try:
            return wait_for(finished, timeout, 0.1, "the attack on %s to end" % worker)
        finally:
            self.calm(worker)

    def attack_records(self, worker):
        try:
            with open(os.path.join(self.test_dir, "results", worker + ".jsonl")) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def calm(self, worker):
        try:
            os.unlink(os.path.join(self.test_dir, worker))
        except FileNotFoundError:
            pass

    def log(self, name="supervisor"):
        try:
            with open(os.path.join(self.log_dir, name + ".log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    # ---- ending -------------------------------------------------------------------------
    def stop(self, timeout=20):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode

    def cleanup(self):
        self.stop()
        for pid in self.pids_seen:  # never leave a worker behind, whatever the test did
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def make_dir():
    base = tempfile.mkdtemp(prefix="guestagent-it-", dir="/tmp")
    os.chmod(base, 0o755)
    return base


@pytest.fixture
def make_agent(accounts):
    made = []

    def make(overrides=None):
        agent = Agent(make_dir(), overrides)
        made.append(agent)
        return agent
    yield make
    for agent in made:
        agent.cleanup()
        shutil.rmtree(agent.dir, ignore_errors=True)


@pytest.fixture
def agent(make_agent, request):
    # Parametrize with indirect=True to pick Agent.Spawner (zygote, the default, or exec).
    method = getattr(request, "param", None)
    return make_agent({"Agent.Spawner": method} if method else None).start()


# The supervision tests that run under both ways of starting a worker.
BOTH_SPAWNERS = pytest.mark.parametrize("agent", ["zygote", "exec"], indirect=True)
