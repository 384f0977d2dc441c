"""The provisioning job: waagent's sequence (reference/protocol.md §3.4, §3.5) in an unprivileged
worker that asks the broker for every effect.

    state (marker, product_uuid) -> same VM: nothing, no health report (unless a Ready is
      owed: a run that wrote the marker but could not report Ready leaves a note in our own
      state folder, and the next run - the supervisor's retry, or the next boot - reports it)
    Provisioning.Agent disabled  -> marker, Ready on every start (§3.1)
    cloud-init (or auto + cloud-init enabled) -> wait for its ovf-env.xml and host key, Ready
    otherwise: ovf (DVD) -> protocol + goal state -> NotReady/Provisioning/Starting ->
      hostname -> user -> password -> sudoers -> sshd_config -> keys -> custom data ->
      root password -> host keys -> restart sshd -> marker (+ disable_agent) -> Ready

Any failure is reported as NotReady / ProvisioningFailed with "<step>: <reason>" and logged
with the step; the marker is not written, the provisioning verbs stay open and the worker exits
EXIT_FAILED, so the supervisor retries it with backoff and then leaves it FATAL with that
reason in `agentctl status` (supervisor/table.py, ONCE). Every other path ends with
provisioning.finish, which closes the provisioning verbs for the rest of the boot, and exits 0
(once per boot: the worker is not resident). A changed VM id (a captured
image) forgets the previous VM's protocol state and provisions afresh; if such an image has no
provisioning media, it is taken as a specialized disk and, as waagent does, only reported Ready.

Each step's duration is logged in one `event=provisioned` line (benchmarks/provisioning_time.py
reads it), with the host-key generation apart and the worker's peak memory.
"""

import contextlib
import importlib
import logging
import os
import subprocess
import threading
import time
from typing import Dict, List, Optional

import config
from ipc.errors import IpcError
from ipc.schema import HOSTNAME, USERNAME, SchemaError
from workers.provisioning import everyboot, identity, ovf, rdma, resource_disk
from workers.provisioning.password import PasswordError, hash_password

log = logging.getLogger("provisioning")

ENV_CONFIG = "GUESTAGENT_CONFIG"
EXIT_FAILED = 5    # provisioning failed and NotReady/ProvisioningFailed was reported (or tried)
STARTING = "Starting"
POLL = 1.0
# In the worker's own state folder: the VM id whose Ready the platform has not had yet.
READY_PENDING = "ready_pending"
# In the worker's own state folder: the boot id of the boot whose provisioning gate is closed.
FINISHED = "finished"


class StepFailed(Exception):
    def __init__(self, step: str, reason: str):
        super().__init__("%s: %s" % (step, reason))
        self.step, self.reason = step, reason


class Timings:
    def __init__(self):
        self.steps: List[tuple] = []

    @contextlib.contextmanager
    def step(self, name: str, worker=None):
        start = time.monotonic()
        if worker is not None:
            worker.tick()
            try:
                worker.status("provisioning: %s" % name)
            except IpcError:
                pass
        try:
            yield
        except StepFailed:
            raise
        except IpcError as e:
            raise StepFailed(name, e.message) from None
        except (ovf.OvfError, PasswordError) as e:
            raise StepFailed(name, str(e)) from None
        except Exception as e:  # noqa: B902 - platform errors and the like: named, with the step
            raise StepFailed(name, "%s: %s" % (type(e).__name__, e)) from None
        finally:
            self.steps.append((name, time.monotonic() - start))

    def line(self) -> str:
        return " ".join("%s=%.3f" % (n, s) for n, s in self.steps)


@contextlib.contextmanager
def busy(worker):
    """Keep heartbeats flowing while a bounded platform call (with its own timeouts) runs."""
    done = threading.Event()

    def ticker():
        while not done.wait(max(0.05, worker.heartbeat_interval / 2)):
            worker.tick()
    t = threading.Thread(target=ticker, name="busy", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


def process_age() -> Optional[float]:
    """Seconds since this process started (interpreter start and imports, at the job's start)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def peak_memory_kib() -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _import_quietly(module: str) -> None:
    """Import ahead of need; a failure is the need's to report, when it imports it again."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001
        pass


def ssh_public_key_of(cert_pem: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                          serialization.PublicFormat.OpenSSH).decode()


def host_key_thumbprint(pub_path: str) -> Optional[str]:
    try:
        out = subprocess.run(["ssh-keygen", "-lf", pub_path], capture_output=True, text=True,
                             timeout=30, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.split()
    return words[1].replace(":", "") if out.returncode == 0 and len(words) > 1 else None


class Provisioning:
    def __init__(self, worker, conf):
        self.worker = worker
        self.conf = conf
        self.timings = Timings()
        self.client = None
        self.goal_state = None
        self.host_key_seconds = 0.0
        self.thumbprint = None
        self.failure: Optional[StepFailed] = None
        # From provisioning.state: the broker's own view (gate closed from disk, the marker,
        # Provisioning.Agent; verbs that ran already this boot and VM id). A DENIED verb is
        # a violation that ends the worker, so the worker never knocks on a closed gate.
        self.gate_open = True
        self.done: frozenset = frozenset()
        # Slow verbs left to run in the broker while provisioning goes on: verb -> request id
        # (the resource disk's, from the worker's start; the host keys', from the OVF read).
        self.pending: Dict[str, int] = {}

    # ---- helpers ----------------------------------------------------------------------------
    def call(self, verb: str, args: Optional[dict] = None) -> dict:
        result, fds = self.worker.call(verb, args or {})
        for fd in fds:
            os.close(fd)
        return result

    def begin(self, verb: str) -> None:
        self.pending[verb] = self.worker.begin(verb, {})

    def collect(self, verb: str) -> dict:
        """The reply to `begin(verb)`."""
        result, fds = self.worker.collect(verb, self.pending.pop(verb))
        for fd in fds:
            os.close(fd)
        return result

    def abandon(self) -> None:
        """A failed run waits for what it began (ignoring the outcome): a retry must not start
        the same work beside it in the broker."""
        self.disk_done()
        for verb in list(self.pending):
            try:
                self.collect(verb)
            except IpcError:
                pass

    def disk_done(self) -> None:
        """The resource disk's outcome logged, once (never fatal: resource_disk.finish)."""
        ident = self.pending.pop(resource_disk.VERB, None)
        if ident is not None:
            resource_disk.finish(self.worker, ident)

    def step(self, name):
        return self.timings.step(name, self.worker)

    def platform(self):
        if self.client is None:
            from workers.platform import PlatformClient
            # The transport key comes from the broker (which makes it ahead of need) when
            # the certificates of SSH keys need it.
            self.client = PlatformClient.for_worker(self.worker, self.conf)
        return self.client

    def fetch_goal_state(self):
        with self.step("goal_state"), busy(self.worker):
            client = self.platform()
            client.detect()
            self.goal_state = client.goal_state()

    def report_ready(self):
        with self.step("resource_disk"):
            self.disk_done()   # begun at the start; the disk is ready before Ready is said
        with self.step("report_ready"), busy(self.worker):
            self.platform().report_ready(self.goal_state)

    def report_failure(self, failure: StepFailed) -> None:
        from workers.platform import reports
        log.error("event=provisioning_failed step=%s reason=%r", failure.step, failure.reason)
        try:
            with busy(self.worker):
                if self.goal_state is None:
                    client = self.platform()
                    client.detect()
                    self.goal_state = client.goal_state()
                self.platform().report_not_ready(reports.PROVISIONING_FAILED, str(failure),
                                                 self.goal_state)
            log.info("event=health_reported state=NotReady substatus=ProvisioningFailed")
        except Exception as e:  # noqa: B902 - the platform is unreachable: the log says so
            log.error("event=health_report_failed state=NotReady error=%r", str(e)[:500])

    def finish(self, vm_id: Optional[str], disable_agent: bool = False) -> None:
        if not self.gate_open:
            log.info("event=provisioning_gate_already_closed (the broker closed it)")
        else:
            self.call("provisioning.finish", {"vm_id": vm_id, "disable_agent": disable_agent})
            self.gate_open = False
        # The gate is closed for the rest of this boot: a later run (a retry, agentctl start)
        # must not knock on it (a DENIED verb is a violation), so it needs to know.
        from statefiles import write_atomic
        try:
            write_atomic(self.state_path(FINISHED), (boot_id(self.conf["OS.SysRoot"]) or "")
                         .encode() + b"\n", 0o600)
        except OSError as e:
            log.warning("event=state_unwritable path=%s error=%r", self.state_path(FINISHED),
                        e.strerror)

    # Ready owed to the platform. waagent writes the marker, then reports Ready; when that
    # report fails, every later start sees the marker and reports nothing, and the VM never
    # leaves "provisioning" in Azure. We note the debt in our own state folder (it survives
    # reboots) and pay it first on the next run: the supervisor's retry, or the next boot.
    def state_path(self, name: str) -> str:
        return os.path.join(self.conf["Agent.StateDir"], "provisioning", name)

    def owed_ready(self) -> Optional[str]:
        """The VM id whose Ready is owed ("" for none known), or None when nothing is owed."""
        try:
            with open(self.state_path(READY_PENDING)) as f:
                return f.read(128).strip()
        except OSError:
            return None

    def pay_owed_ready(self) -> str:
        """Report the owed Ready, with no broker verb (the gate may be closed already)."""
        vm_id = self.owed_ready()
        log.warning("event=ready_owed vm_id=%s: the VM was provisioned but its Ready was not "
                    "reported; reporting it now", vm_id)
        try:
            self.fetch_goal_state()
        except StepFailed as failure:
            self.failure = failure
        else:
            if self.ready_after_marker(vm_id or None):
                return "already provisioned; the owed Ready reported"
        outcome = "already provisioned; Ready NOT reported (%s)" % self.failure
        if self.conf.provisioning_agent == "disabled":
            # As disabled() ends: done, the debt kept for the worker's next start.
            self.failure = None
        return outcome

    def owe_ready(self, vm_id: Optional[str]) -> None:
        """Note the debt *before* the marker is written and the gate closed: a kill between
        the two then leaves a debt the next run pays, never a marker with no Ready. If the
        note cannot be written, the marker is not written either (the run fails, retried)."""
        from statefiles import write_atomic
        with self.step("owe_ready"):
            write_atomic(self.state_path(READY_PENDING), (vm_id or "").encode(), 0o600)

    def close(self, vm_id: Optional[str], disable_agent: bool = False) -> None:
        """The debt noted, then the marker written and the gate closed."""
        self.owe_ready(vm_id)
        with self.step("finish"):
            self.finish(vm_id, disable_agent=disable_agent)

    def ready_after_marker(self, vm_id: Optional[str]) -> bool:
        """Report Ready once the marker is written (the debt is noted already); on failure the
        run fails (the supervisor retries it with backoff) and the debt stays for the next
        run. Then the SSH host key's thumbprint, if this run knows one (§1.10)."""
        try:
            self.report_ready()
        except StepFailed as failure:
            log.error("event=ready_failed step=%s reason=%r: Ready stays owed to the platform",
                      failure.step, failure.reason)
            self.failure = failure
            return False
        os.unlink(self.state_path(READY_PENDING))
        self.publish_thumbprint()
        return True

    def publish_thumbprint(self) -> None:
        """roleProperties with CertificateThumbprint, as waagent meant to (2.15 computes it and
        never sends it): the platform learns the host key to show a first-time SSH user.
        After Ready, and not fatal: Ready is what the platform waits for."""
        if not self.thumbprint:
            return
        try:
            with self.step("role_properties"), busy(self.worker):
                self.platform().report_role_properties(self.thumbprint, self.goal_state)
            log.info("event=thumbprint_published thumbprint=%s", self.thumbprint)
        except StepFailed as failure:
            log.warning("event=thumbprint_not_published reason=%r", failure.reason)

    # ---- the job ----------------------------------------------------------------------------
    def run(self) -> str:
        """Provision if this VM needs it; returns what happened (for the status line)."""
        imports = process_age()
        if imports is not None:
            self.timings.steps.append(("interpreter_and_imports", imports))
        with self.step("state"):
            state = self.call("provisioning.state")
            vm_id = identity.vm_id(state["product_uuid"])
            self.gate_open = state["gate_open"]
            self.done = frozenset(state["done"])
        agent = self.conf.provisioning_agent
        if not self.conf["Protocol.Endpoint"] and not identity.on_azure(self.conf["OS.SysRoot"]):
            # Never probe 168.63.129.16 from a machine that is not an Azure VM (a developer's
            # box, a test host): there is no platform to report to.
            log.warning("event=not_azure no Azure chassis asset tag and no Protocol.Endpoint: "
                        "nothing to provision")
            self.finish(None)
            return "not an Azure VM"
        if vm_id is None:
            log.warning("event=no_vm_id product_uuid unreadable; the marker cannot be checked")
        if agent not in ("auto", "waagent", "cloud-init"):
            return self.disabled(vm_id)
        if state["marker"] == "" and vm_id is not None:
            # protocol.md §3.4 step 1: an empty marker is an older waagent's "provisioned":
            # the marker rewritten with the VM id and Ready reported, nothing provisioned.
            return self.legacy_marker(vm_id)
        if identity.marker_matches(state["marker"], vm_id):
            self.finish(None)
            if self.owed_ready() == (vm_id or ""):
                return self.pay_owed_ready()
            log.info("event=already_provisioned vm_id=%s (no health report)", vm_id)
            return "already provisioned"
        if not self.gate_open:
            log.info("event=provisioning_gate_closed_this_boot: nothing to do")
            return "provisioning already ended this boot"
        changed = bool(state["marker"]) and vm_id is not None
        if changed:
            log.warning("event=vm_id_changed previous=%s current=%s: provisioning afresh",
                        state["marker"][:64], vm_id)
            if "provisioning.forget_previous_vm" in self.done:
                log.info("event=previous_vm_already_forgotten this boot")
            else:
                with self.step("forget_previous_vm"):
                    self.call("provisioning.forget_previous_vm")
        cloud_init = identity.cloud_init_enabled(self.conf["OS.SysRoot"])
        try:
            if agent == "cloud-init" or (agent == "auto" and cloud_init):
                return self.with_cloud_init(vm_id)
            if cloud_init:
                raise StepFailed("agent", "cloud-init is enabled and Provisioning.Agent=waagent: "
                                 "disable cloud-init or set Provisioning.Agent=auto")
            return self.with_waagent(vm_id, changed)
        except StepFailed as failure:
            # No provisioning.finish: the gate stays open for the supervisor's retries.
            self.abandon()
            self.report_failure(failure)
            self.failure = failure
            return "failed at %s" % failure

    def disabled(self, vm_id) -> str:
        """§3.1: marker and Ready on every start. The broker wrote the marker and closed the
        gate at its start; the Ready is owed until reported. The platform client has retried
        already (Protocol.DetectionAttempts: an hour by default), so a failure ends the run
        as done, not failed (the agent's only job here is this report): the debt stays, and
        the next start of the worker pays it (`agentctl start provisioning`, the next boot)."""
        log.info("event=provisioning_disabled agent=%s: marker and Ready only",
                 self.conf.provisioning_agent)
        try:
            self.close(vm_id)
            self.fetch_goal_state()
            reported = self.ready_after_marker(vm_id)
        except StepFailed as failure:
            self.failure = failure
            reported = False
        if reported:
            return "disabled; Ready reported"
        log.error("event=ready_failed reason=%r: Ready stays owed to the platform (the next "
                  "start of the worker reports it)", str(self.failure))
        outcome = "disabled; Ready owed (%s)" % self.failure
        self.failure = None
        return outcome

    def legacy_marker(self, vm_id) -> str:
        log.warning("event=legacy_empty_marker: an older agent provisioned this VM; the marker "
                    "is rewritten with vm_id=%s and Ready reported", vm_id)
        try:
            self.close(vm_id)
            self.fetch_goal_state()
        except StepFailed as failure:
            self.failure = failure
            return "provisioned by an older agent; Ready NOT reported (%s)" % failure
        if not self.ready_after_marker(vm_id):
            return "provisioned by an older agent; Ready NOT reported (%s)" % self.failure
        return "provisioned by an older agent; Ready reported"

    def with_waagent(self, vm_id, changed) -> str:
        # The SSH keys' step decrypts the certificates with cryptography and asn1crypto, which
        # the spawner does not preload (the resident workers never use them, issue 17):
        # imported on a thread now, while the job waits on the DVD, the platform and the broker.
        threading.Thread(target=_import_quietly, args=("workers.platform.certificates",),
                         name="import", daemon=True).start()
        with self.step("ovf"):
            try:
                text = self.call("provisioning.read_ovf", {"source": "dvd"})["ovf"]
            except IpcError as e:
                if changed and e.message.startswith("no provisioning media"):
                    # A captured image booted as a specialized disk: nothing to provision.
                    log.warning("event=no_media_on_new_vm: reporting Ready as waagent does")
                    self.fetch_goal_state()
                    self.close(vm_id)
                    if not self.ready_after_marker(vm_id):
                        return "new VM id without media; Ready NOT reported"
                    return "new VM id without media; Ready reported"
                raise
            env = ovf.parse(text or "", self.conf["OS.HomeDir"])
        # The host keys take seconds of CPU and depend on nothing provisioning does: made in
        # the broker while the goal state, the user and the keys are done here.
        self.begin("provisioning.host_keys")
        self.fetch_goal_state()
        with self.step("report_starting"), busy(self.worker):
            from workers.platform import reports
            self.platform().report_not_ready(reports.PROVISIONING, STARTING, self.goal_state)
        self.apply(env)
        self.close(vm_id, disable_agent=not env.provision_guest_agent)
        if not env.provision_guest_agent:
            log.info("event=disable_agent ProvisionGuestAgent=false: extensions stay idle")
        if not self.ready_after_marker(vm_id):
            return "provisioned; Ready NOT reported (%s)" % self.failure
        self.summary(env.username)
        return "provisioned"

    def apply(self, env: ovf.OvfEnv) -> None:
        conf = self.conf
        with self.step("hostname"):
            _check(HOSTNAME, env.hostname, "HostName", "hostname")
            self.call("provisioning.hostname", {"hostname": env.hostname})
        everyboot.publish_hostname(self.worker)
        with self.step("user"):
            _check(USERNAME, env.username, "UserName", "user")
            user = self.call("provisioning.user", {"username": env.username})
            log.info("event=user user=%s created=%s groups=%s", env.username, user["created"],
                     ",".join(user["groups"]))
        if env.password:
            with self.step("user_pw"):
                hashed = hash_password(env.password, conf["Provisioning.PasswordCryptId"],
                                       conf["Provisioning.PasswordCryptSaltLength"])
                self.call("provisioning.password", {"username": env.username, "hash": hashed})
        with self.step("sudoers"):
            self.call("provisioning.sudoers", {"username": env.username,
                                               "nopasswd": not env.password})
        with self.step("sshd_config"):
            self.call("provisioning.sshd_config",
                      {"disable_password_authentication": env.disable_ssh_password_auth})
        if env.public_keys or env.key_pairs:
            with self.step("ssh_keys"):
                self.keys(env)
        if env.custom_data and "provisioning.custom_data" in self.done:
            # Once per boot and VM id, on the broker's disk: a retry does not run it again.
            log.warning("event=custom_data_already_ran this boot: not run again")
        elif env.custom_data:
            # (Step names avoid the redactor's words: the timings line and a failure keep them.)
            with self.step("custom_script"):
                r = self.call("provisioning.custom_data", {"custom_data": env.custom_data})
                if r["executed"] and r["exit_code"] != 0:
                    log.warning("event=custom_data_exit code=%s", r["exit_code"])
        if conf["Provisioning.DeleteRootPassword"]:
            with self.step("root_pw_delete"):
                self.call("provisioning.lock_root_password")
        with self.step("host_keys"):
            r = self.collect("provisioning.host_keys")
            self.host_key_seconds = r["seconds"]
            self.thumbprint = r["thumbprint"]
            log.info("event=ssh_host_key type=%s thumbprint=%s regenerated=%s", r["type"],
                     r["thumbprint"], r["regenerated"])
        with self.step("restart_sshd"):
            log.info("event=sshd %s", self.call("provisioning.restart_sshd")["how"])

    def keys(self, env: ovf.OvfEnv) -> None:
        by_thumbprint: Dict[str, object] = {}
        needs_certs = env.key_pairs or any(not k.value for k in env.public_keys)
        if needs_certs:
            with busy(self.worker):
                for record in self.platform().certificates(self.goal_state):
                    by_thumbprint[record.thumbprint.upper()] = record
        for key in env.public_keys:
            if key.value:
                if not key.value.startswith("ssh-"):
                    raise StepFailed("ssh_keys", "the public key for %s is not an ssh- key"
                                     % key.path)
                line = key.value
            else:
                record = by_thumbprint.get(key.fingerprint)
                if record is None:
                    raise StepFailed("ssh_keys", "no certificate %s in the goal state for %s"
                                     % (key.fingerprint, key.path))
                line = ssh_public_key_of(record.certificate_pem)
            self.call("provisioning.authorized_key",
                      {"username": env.username, "path": key.path, "key": line})
        for pair in env.key_pairs:
            record = by_thumbprint.get(pair.fingerprint)
            if record is None or not record.private_key_pem:
                raise StepFailed("ssh_keys", "no private key %s in the goal state for %s"
                                 % (pair.fingerprint, pair.path))
            self.call("provisioning.key_pair", {
                "username": env.username, "path": pair.path,
                "private_key": record.private_key_pem,
                "public_key": ssh_public_key_of(record.certificate_pem)})

    def with_cloud_init(self, vm_id) -> str:
        """§3.5: cloud-init provisions; we wait for its ovf-env.xml and host key, report Ready."""
        log.info("event=cloud_init_provisions agent=%s", self.conf.provisioning_agent)
        timeout = self.conf["Provisioning.CloudInitTimeout"]
        with self.step("cloud_init_ovf"):
            deadline = time.monotonic() + timeout
            while True:
                text = self.call("provisioning.read_ovf", {"source": "saved"})["ovf"]
                if text:
                    break
                if time.monotonic() >= deadline:
                    raise StepFailed("cloud_init_ovf", "cloud-init wrote no ovf-env.xml in "
                                     "%.0f s" % timeout)
                self.worker.tick()
                self.worker.wait(POLL)
            env = ovf.parse(text, self.conf["OS.HomeDir"])
        self.fetch_goal_state()
        with self.step("report_starting"), busy(self.worker):
            from workers.platform import reports
            self.platform().report_not_ready(reports.PROVISIONING, STARTING, self.goal_state)
        kind = self.conf["Provisioning.SshHostKeyPairType"]
        pub = os.path.join(self.conf["OS.SshDir"], "ssh_host_%s_key.pub"
                           % ("rsa" if kind == "auto" else kind))
        with self.step("cloud_init_host_key"):
            deadline = time.monotonic() + timeout
            while not os.path.exists(pub):
                if time.monotonic() >= deadline:
                    raise StepFailed("cloud_init_host_key", "no %s in %.0f s" % (pub, timeout))
                self.worker.tick()
                self.worker.wait(POLL)
            self.thumbprint = host_key_thumbprint(pub)
            log.info("event=ssh_host_key thumbprint=%s", self.thumbprint)
        self.close(vm_id, disable_agent=not env.provision_guest_agent)
        if not self.ready_after_marker(vm_id):
            return "cloud-init provisioned; Ready NOT reported (%s)" % self.failure
        self.summary(None)
        return "cloud-init provisioned; Ready reported"

    def summary(self, username) -> None:
        total = sum(s for n, s in self.timings.steps)
        log.info("event=provisioned user=%s total=%.3f host_keys=%.3f peak_kib=%s steps: %s",
                 username, total, self.host_key_seconds, peak_memory_kib(),
                 self.timings.line())


def _check(schema, value: str, what: str, step: str) -> None:
    try:
        schema.check(value)
    except SchemaError:
        raise StepFailed(step, "%s %r is not valid here" % (what, value[:64])) from None


def boot_id(sysroot: str) -> str:
    try:
        with open(os.path.join(sysroot or "/", "proc/sys/kernel/random/boot_id")) as f:
            return f.read(64).strip()
    except OSError:
        return ""


def set_up_rdma(worker, conf, prov) -> None:
    """After provisioning, as waagent's daemon: RDMA when waagent.conf asks (rdma.py), on an
    Azure VM or with Protocol.Endpoint (there is a platform to read SharedConfig from)."""
    if not conf["Protocol.Endpoint"] and not identity.on_azure(conf["OS.SysRoot"]):
        return
    rdma.run(worker, conf, prov)


def job(worker) -> Optional[int]:
    """Provision (once per boot), then return: the worker exits 0 (EXIT_FAILED on failure)."""
    conf = config.load(os.environ.get(ENV_CONFIG, config.DEFAULT_PATH))
    worker.ready()
    prov = Provisioning(worker, conf)
    # Every boot, begun before provisioning as waagent orders it (§5), done before Ready.
    prov.pending[resource_disk.VERB] = resource_disk.begin(worker)
    exit_code = provision(worker, conf, prov)
    prov.disk_done()   # (when no Ready was reported: nothing waited for it yet)
    return exit_code


def provision(worker, conf, prov) -> Optional[int]:
    # A worker started again after provisioning ended this boot (agentctl start, a supervisor
    # restart, a retry after the Ready report failed) must not knock on the closed gate (a
    # DENIED verb is a violation): it knows from its own state folder, keyed by the boot id.
    if everyboot.run(worker, conf):   # per-boot kernel and network steps; SCVMM provisions
        return
    boot = boot_id(conf["OS.SysRoot"])
    try:
        with open(prov.state_path(FINISHED)) as f:
            finished_boot = f.read(64).strip()
    except OSError:
        finished_boot = None
    if boot and finished_boot == boot:
        if prov.owed_ready() is None:
            log.info("event=provisioning_done outcome='already finished this boot'")
            worker.status("provisioning: already finished this boot")
            set_up_rdma(worker, conf, prov)
            return
        outcome = prov.pay_owed_ready()
    else:
        outcome = prov.run()
    if prov.failure is not None:
        log.info("event=provisioning_done outcome=%r exit=%d", outcome, EXIT_FAILED)
        try:
            worker.status("provisioning: %s" % outcome)
        except IpcError:
            pass
        return EXIT_FAILED
    log.info("event=provisioning_done outcome=%r", outcome)
    try:
        worker.status("provisioning: %s" % outcome)
    except IpcError:
        pass
    set_up_rdma(worker, conf, prov)
    # The worker exits 0 and the supervisor shows it EXITED with the status line above.
