"""A confined host: the whole agent run against the emulator with the real useradd, chpasswd,
ssh-keygen, hostname and mount, leaving the machine as it was. Used by the provisioning
integration tests, `make demo` (emulator/demo.py) and benchmarks/provisioning_time.py.

Outside, in a temporary folder R (0755, so the workers can reach their config):
    R/etc       a copy of /etc (plus a stand-in sshd_config when the host has no sshd, and
                without the ssh init script, so nothing can restart the host's sshd)
    R/home      empty
    R/varlib    empty: /var/lib inside (so /var/lib/waagent and /var/lib/guestagent are the
                agent's defaults, and visible from outside)
    R/log       /var/log inside
    R/media     the emulator's media folder (ovf-env.xml), the DVD stand-in: DVD.Device names
                it and the broker bind-mounts it read-only where the DVD would be mounted
    R/sysroot   OS.SysRoot: sys/class/dmi/id/product_uuid (the VM id)
    R/waagent.conf
    R/localbin  only if a test put a tool there (put_tool): /usr/local/bin inside
Inside `unshare --mount --uts --propagation private` (a private mount table and hostname),
this module's `inner` command bind-mounts R/etc on /etc, R/home on /home, R/varlib on /var/lib,
R/log on /var/log, a tmpfs on /mnt (DVD.MountPoint) and one on /run (no host systemd to
talk to), creates guestagent's accounts in the copied /etc, and execs guestagentd. When its
last process ends the namespace and its mounts vanish; `close` removes R.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from typing import Dict, List, Optional

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SCENARIO = os.path.join(HERE, "scenarios", "default.json")
VENV = os.environ.get("GUESTAGENT_VENV", "/opt/guestagent")
GUESTAGENTD = os.path.join(VENV, "bin", "guestagentd")
PYTHON = os.path.join(VENV, "bin", "python")
PRODUCT_UUID = "4C4C4544-0050-4810-8051-B2C04F4D3132"
SYSUSERS = "systemd/guestagent.sysusers.conf"
# A Debian 12-like sshd_config for hosts without openssh-server.
SSHD_CONFIG = """\
# Stand-in sshd_config of the confined host (the host has no openssh-server).
Include /etc/ssh/sshd_config.d/*.conf
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""
FAST = {
    "Agent.HeartbeatInterval": "0.5",
    "Agent.ReadyTimeout": "20",
    "Agent.StopTimeout": "5",
    "Agent.FatalRetryPeriod": "0",
    "Protocol.HttpTimeout": "2",
    "Protocol.HttpAttempts": "3",
    "Protocol.RetryDelay": "0.05",
    "Protocol.ThrottleDelay": "0.05",
    "Protocol.HealthReportAttempts": "3",
    "Protocol.HealthReportRetryDelay": "0.05",
    "Protocol.GoalStateRetries": "3",
    "Protocol.GoalStateRetryDelay": "0.05",
    "Protocol.DetectionAttempts": "3",
    "Protocol.DetectionInterval": "0.1",
    "DVD.MountRetryDelay": "0.1",
    "Provisioning.CloudInitTimeout": "20",
}


class Emulator:
    """`python -m emulator serve` as a process on 127.0.0.1 (a scenario, or any serve
    arguments such as --replay DIR), with its control API. Tests use it too."""

    def __init__(self, scenario: str = DEFAULT_SCENARIO, python: str = sys.executable,
                 args: Optional[List[str]] = None):
        args = ["--scenario", scenario] if args is None else list(args)
        self.proc = subprocess.Popen([python, "-m", "emulator", "serve", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=os.path.dirname(HERE))
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()
            self.proc.wait(timeout=5)
            raise RuntimeError("the emulator did not start: %s" % err[-2000:])
        self.info = json.loads(line)
        self.ws = self.info["wireserver_port"]
        self.hgap = self.info["hostgaplugin_port"]
        self.imds = self.info["imds_port"]
        self.url = "http://127.0.0.1:%d" % self.ws

    def control(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/_emulator/" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read(64 << 20))

    def state(self) -> dict:
        return self.control("GET", "state")

    def health(self):
        """The health reports received, oldest first (each: state, substatus, description)."""
        received = self.state()["received"]
        return [r for k, v in received.items() if k.lower() == "health" for r in v]

    def faults(self, spec: dict):
        return self.control("POST", "faults", spec)

    def conf(self) -> Dict[str, str]:
        return {"Protocol.Endpoint": "127.0.0.1:%d" % self.ws,
                "Protocol.HostPluginPort": str(self.hgap),
                "Protocol.ImdsEndpoint": "127.0.0.1:%d" % self.imds}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def write_media(scenario: str, out: str, python: str = sys.executable) -> str:
    subprocess.run([python, "-m", "emulator", "media", "--scenario", scenario, "--out", out,
                    "--no-iso"], check=True, capture_output=True, cwd=os.path.dirname(HERE),
                   timeout=60)
    return os.path.join(out, "ovf-env.xml")


def _copy_if_there(src, dst):
    # Another process may be editing /etc meanwhile (useradd's temporary and lock files).
    try:
        shutil.copy2(src, dst)
    except FileNotFoundError:
        pass


class ConfinedHost:
    def __init__(self, conf: Optional[Dict[str, str]] = None, base: Optional[str] = None,
                 product_uuid: str = PRODUCT_UUID):
        self.root = tempfile.mkdtemp(prefix="guestagent-host.", dir=base or "/tmp")
        os.chmod(self.root, 0o755)
        self.etc = self.path("etc")
        self.home = self.path("home")
        self.varlib = self.path("varlib")
        self.log_dir = self.path("log")
        self.media = self.path("media")
        self.sysroot = self.path("sysroot")
        self.conf_path = self.path("waagent.conf")
        self.console = self.path("console")
        self.proc = None
        self._procs = []
        self.started_at = None
        shutil.copytree("/etc", self.etc, symlinks=True, copy_function=_copy_if_there,
                        ignore=shutil.ignore_patterns("*.lock", "*.[0-9]*[0-9]", "*-"))
        for name in os.listdir(os.path.join(self.etc, "init.d")) if os.path.isdir(
                os.path.join(self.etc, "init.d")) else ():
            if name.startswith("ssh"):
                os.unlink(os.path.join(self.etc, "init.d", name))
        ssh_dir = os.path.join(self.etc, "ssh")
        os.makedirs(ssh_dir, 0o755, exist_ok=True)
        if not os.path.exists(os.path.join(ssh_dir, "sshd_config")):
            with open(os.path.join(ssh_dir, "sshd_config"), "w") as f:
                f.write(SSHD_CONFIG)
        for d in (self.home, self.varlib, self.log_dir, self.media):
            os.mkdir(d, 0o755)
        open(self.console, "w").close()
        os.chmod(self.media, 0o700)
        dmi = os.path.join(self.sysroot, "sys", "class", "dmi", "id")
        os.makedirs(dmi, 0o755)
        os.makedirs(os.path.join(self.sysroot, "proc", "sys", "kernel", "random"), 0o755)
        self.reboot()
        self.set_product_uuid(product_uuid)
        self.write_conf(conf or {})
        for candidate in (os.path.join(os.getcwd(), SYSUSERS),
                          os.path.join(os.path.dirname(HERE), SYSUSERS),
                          "/usr/lib/sysusers.d/guestagent.conf"):
            if os.path.exists(candidate):
                shutil.copyfile(candidate, self.path("sysusers.conf"))
                break
        else:
            raise RuntimeError("no %s: run from the checkout" % SYSUSERS)

    def path(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    def reboot(self) -> None:
        """A new boot id (OS.SysRoot/proc/sys/kernel/random/boot_id): the next start is a boot."""
        with open(os.path.join(self.sysroot, "proc", "sys", "kernel", "random", "boot_id"),
                  "w") as f:
            f.write(str(uuid.uuid4()) + "\n")

    def set_product_uuid(self, value: str) -> None:
        p = os.path.join(self.sysroot, "sys", "class", "dmi", "id", "product_uuid")
        with open(p, "w") as f:
            f.write(value + "\n")
        os.chmod(p, 0o400)

    def write_conf(self, conf: Dict[str, str]) -> None:
        values = dict(FAST)
        # The system console stand-in (a file the test reads): never the host's /dev/console.
        values.update({"DVD.Device": self.media, "OS.SysRoot": self.sysroot,
                       "Logs.ConsoleDevice": self.console})
        values.update(conf)
        with open(self.conf_path, "w") as f:
            for k, v in values.items():
                f.write("%s=%s\n" % (k, v))
        os.chmod(self.conf_path, 0o644)

    def write_media(self, scenario: str = DEFAULT_SCENARIO, ovf_bytes: Optional[bytes] = None):
        if ovf_bytes is None:
            with tempfile.TemporaryDirectory() as out:
                with open(write_media(scenario, out), "rb") as f:
                    ovf_bytes = f.read()
        fd = os.open(os.path.join(self.media, "ovf-env.xml"),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(ovf_bytes)

    def remove_media(self) -> None:
        shutil.rmtree(self.media, ignore_errors=True)

    def enable_cloud_init(self, ovf_bytes: bytes, host_key: bool = True) -> None:
        """A stand-in cloud-init: its unit enabled, its ovf-env.xml and a host key written."""
        wants = os.path.join(self.etc, "systemd", "system", "cloud-init.target.wants")
        os.makedirs(wants, 0o755, exist_ok=True)
        os.symlink("/lib/systemd/system/cloud-init-local.service",
                   os.path.join(wants, "cloud-init-local.service"))
        lib = os.path.join(self.varlib, "waagent")
        os.makedirs(lib, 0o700, exist_ok=True)
        with open(os.path.join(lib, "ovf-env.xml"), "wb") as f:
            f.write(ovf_bytes)
        if host_key:
            key = os.path.join(self.etc, "ssh", "ssh_host_rsa_key")
            for p in (key, key + ".pub"):
                if os.path.exists(p):
                    os.unlink(p)
            subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", key],
                           check=True, timeout=60)

    # ---- the agent ------------------------------------------------------------------------
    def start(self, extra_env: Optional[Dict[str, str]] = None) -> "ConfinedHost":
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8",
               # inner() execs <venv>/bin/guestagentd: the venv this process was given.
               "GUESTAGENT_VENV": VENV}
        env.update(extra_env or {})
        if self.proc is None:
            self._stderr = open(self.path("stderr"), "ab")
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--propagation", "private", "--",
             PYTHON, "-I", "-m", "emulator.confinement", "inner", self.root],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr, env=env)
        self._procs.append(self.proc)
        return self

    def put_tool(self, name: str, script: str) -> str:
        """Before start: a script that stands in for the tool `name` in the confined host
        (/usr/local/bin, which comes first on the broker's PATH, is this folder there)."""
        folder = self.path("localbin")
        os.makedirs(folder, 0o755, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, 0o755)
        return path

    def mount_namespace(self, pid: Optional[int] = None) -> Optional[str]:
        """The mount namespace (as /proc/PID/ns/mnt reads) of the agent started as pid (default:
        the running one), written by inner()."""
        if pid is None:
            pid = self.proc.pid if self.proc is not None else 0
        try:
            with open(self.path("mnt_ns.%d" % pid)) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def exec_time(self, timeout: float = 30.0) -> float:
        """Wall-clock time at which the confined guestagentd was exec'd."""
        p = self.path("exec_time")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(p) as f:
                    return float(f.read())
            except (OSError, ValueError):
                time.sleep(0.005)
        raise TimeoutError("guestagentd did not start in the confinement: %s" % self.stderr())

    def run_inside(self, argv, **kwargs):
        """Run a command in the agent's namespaces (its hostname, its mounts)."""
        return subprocess.run(["nsenter", "--target", str(self.proc.pid), "--mount", "--uts",
                               "--"] + list(argv), capture_output=True, text=True, timeout=30,
                              **kwargs)

    def hostname(self) -> str:
        return self.run_inside(["hostname"]).stdout.strip()

    def log(self, name: str = "provisioning") -> str:
        try:
            with open(os.path.join(self.log_dir, "guestagent", name + ".log"),
                      errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def all_logs(self) -> str:
        text = []
        folder = os.path.join(self.log_dir, "guestagent")
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            with open(os.path.join(folder, name), errors="replace") as f:
                text.append(f.read())
        return "\n".join(text) + self.stderr()

    def stderr(self) -> str:
        try:
            with open(self.path("stderr"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def lib(self, *parts) -> str:
        return os.path.join(self.varlib, "waagent", *parts)

    def wait_log(self, needle: str, timeout: float = 30.0, name: str = "provisioning",
                 count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log(name)
            if text.count(needle) >= count:
                return text
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError("no %r in the %s log after %.0f s:\n%s" % (
            needle, name, timeout, self.all_logs()[-6000:]))

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """Stop the agent and everything it started, every start since the last stop (a test
        that starts a host twice leaves no first supervisor behind). The supervisor stops its
        spawner and workers itself; whatever is left below it or in its mount namespace (it was
        SIGKILLed, or hung) is killed here, so a test never leaves a root agent running."""
        if self.proc is None:
            return None
        code = None
        for proc in self._procs:
            code = self._stop_one(proc, timeout)
        self._procs = []
        self._stderr.close()
        self.proc = None
        return code

    def _stop_one(self, proc, timeout: float) -> int:
        tree = _descendants(proc.pid)
        held = None
        if proc.poll() is None:
            # Hold the namespace while we look in it: once its last process is gone its number
            # may go to a namespace another run makes, whose processes are not ours to kill.
            try:
                held = os.open("/proc/%d/ns/mnt" % proc.pid, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            left = {p.pid: p for p in tree if _running(p)}
            left.update((p.pid, p) for p in _in_namespace(self.mount_namespace(proc.pid)))
            left = list(left.values())
            for p in left:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(left, timeout=10)
        finally:
            if held is not None:
                os.close(held)
        if left:
            self._stderr.write(b"confinement: killed %d process(es) the agent left running\n"
                               % len(left))
            self._stderr.flush()
        return proc.returncode

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _in_namespace(ns: Optional[str]):
    out = []
    if not ns:
        return out
    for p in psutil.process_iter():
        try:
            if os.readlink("/proc/%d/ns/mnt" % p.pid) == ns and _running(p):
                out.append(p)
        except (OSError, psutil.Error):
            pass
    return out


def _descendants(pid: int):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _running(p) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ---- inside the namespaces ------------------------------------------------------------------
def _mount(*args) -> None:
    subprocess.run(["mount"] + list(args), check=True, capture_output=True, timeout=30)


def inner(root: str) -> None:
    """Runs as root inside the new mount and UTS namespaces: lay the host out, exec the agent."""
    os.umask(0o022)
    # Nothing mounted here propagates back to the host (unshare made the tree private; say it
    # again in case an older unshare did not).
    _mount("--make-rprivate", "/")
    _mount("--bind", os.path.join(root, "etc"), "/etc")
    _mount("--bind", os.path.join(root, "home"), "/home")
    _mount("--bind", os.path.join(root, "varlib"), "/var/lib")
    _mount("--bind", os.path.join(root, "log"), "/var/log")
    if os.path.isdir(os.path.join(root, "localbin")):
        # A test's stand-in for a system tool: first on the broker's PATH (SAFE_PATH).
        _mount("--bind", os.path.join(root, "localbin"), "/usr/local/bin")
    _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/mnt")
    _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run")
    subprocess.run(["hostname", "localhost"], check=True, timeout=10)
    subprocess.run([sys.executable, "-I", "-m", "cli.accounts", "install",
                    os.path.join(root, "sysusers.conf")], check=True, capture_output=True,
                   timeout=60)
    # unshare exec'd this process without a fork: its pid is the one ConfinedHost.start saw.
    with open(os.path.join(root, "mnt_ns.%d" % os.getpid()), "w") as f:
        f.write(os.readlink("/proc/self/ns/mnt"))
    with open(os.path.join(root, "exec_time"), "w") as f:
        f.write(repr(time.time()))
    os.execv(GUESTAGENTD, [GUESTAGENTD, "--config", os.path.join(root, "waagent.conf")])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m emulator.confinement")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("inner", help="(internal) lay out the confined host and exec guestagentd")
    s.add_argument("root")
    args = p.parse_args(argv)
    if args.cmd == "inner":
        inner(args.root)


if __name__ == "__main__":
    main()
