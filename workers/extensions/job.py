"""The extensions worker's job: the goal-state loop (protocol.md §9.2), the handler state
machine (§4.9) and the status blob (§2).

Every Extensions.GoalStatePeriod: fetch the goal state; on a new incarnation (or a new
vmSettings ETag, when FastTrack is on) fetch, parse and decide; upload the status blob every
loop. A goal state that fails to parse keeps the last good one and is reported in the blob.
GAFamily (agent update) packages are WALinuxAgent itself: never downloaded, never run.

What ran is the broker's record (`extensions.state`: the folders it extracted and the
commands it ran there), not the worker's: a worker killed in the middle of an install and
restarted finds the install recorded (running, or done with its exit code) and does not run
it again.
"""

import json
import logging
import os
import time
from typing import Dict, List, Optional

import launch
from ipc.errors import IpcError
from launch import forked
from workers.extensions import packages, policy, status as S
from workers.extensions.history import History
from workers.extensions.status_watch import StatusWatch
from workers.platform import PlatformClient
from workers.platform.goalstate_tracker import missing_certificates
from workers.platform.certificate_records import (CertificateRecord, install_for_extensions,
                                                   transport_descriptor)
from workers.platform.errors import (CertificateError, DocumentError, PlatformError,
                                     ResourceGoneError)
from workers.platform.extensionsconfig import ExtensionHandler, ExtensionsConfig
from workers.platform.vmsettings import VmSettingsGoalState
from workers.provisioning.identity import cloud_init_enabled

log = logging.getLogger("extensions")

SUPPORTED_REQUIRED_FEATURES = ("MultipleExtensionsPerHandler",)
OP_CODES = {"install": S.CODE_INSTALL, "enable": S.CODE_ENABLE, "disable": S.CODE_DISABLE,
            "update": S.CODE_UPDATE, "uninstall": S.CODE_PROCESSING}
TIMEOUT_KEYS = {"install": "Extensions.InstallTimeout", "enable": "Extensions.EnableTimeout",
                "disable": "Extensions.DisableTimeout", "update": "Extensions.UpdateTimeout",
                "uninstall": "Extensions.UninstallTimeout"}
CLOUD_INIT_DONE = ("/run/cloud-init/result.json", "/run/cloud-init/disabled")
# The decrypted certificates as JSON: the Certificates payload is capped at 4 MiB.
CERTIFICATES_BYTES = 16 * 1024 * 1024
# An extension's status is read again at least this often even when its watch is quiet.
STATUS_REREAD_PERIOD = 60.0
DISABLED_MESSAGE = ("Extension will not be processed since extension processing is disabled. "
                    "To enable extension processing, set Extensions.Enabled=y in "
                    "/etc/waagent.conf")


class Busy(Exception):
    """A command of this handler is still running (e.g. started before a restart)."""


class CommandFailed(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Job:
    def __init__(self, worker, conf, client: Optional[PlatformClient] = None):
        self.worker = worker
        self.conf = conf
        self.client = client or PlatformClient.for_worker(worker, conf)
        self.folder = os.path.join(conf["Agent.StateDir"], worker.name)
        self.history = History(os.path.join(self.folder, "history"),
                               conf["Extensions.GoalStateHistoryCount"],
                               conf["Extensions.GoalStateHistoryBytes"])
        self.config: Optional[ExtensionsConfig] = None     # the last good one
        self.incarnation: Optional[str] = None
        self.etag: Optional[str] = None
        self.fast_track = False
        self.certificates: list = []     # the tenant certificates of the last goal state
        self.pending = False           # something waits for a running command: decide again
        self.goal_state_report: Optional[dict] = None
        self.goal_state_error: Optional[str] = None
        self.reports: Dict[str, S.HandlerReport] = {}
        self.errors_logged = 0
        self.ga_family_logged = False
        self._converged = False
        self.cloud_init_done = False
        self.cloud_init_since: Optional[float] = None
        self._manifests: Dict[str, tuple] = {}   # path -> ((ino, mtime, size), manifest)
        # (handler, version, seq, extension) -> (the broker's last read_status answer, when)
        self.statuses: Dict[tuple, tuple] = {}
        self.status_watch = StatusWatch()

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        w = self.worker
        os.makedirs(self.folder, 0o700, exist_ok=True)
        broker = self.broker_state()
        w.ready()
        if broker["disable_agent"]:
            # ProvisionGuestAgent=false: waagent's daemon sleeps forever; so do we, visibly.
            log.info("event=extensions_idle reason=disable_agent")
            w.status("idle: the agent is disabled (ProvisionGuestAgent=false, disable_agent)")
            while True:
                w.tick()
                w.wait(w.heartbeat_interval)
        enabled = self.conf["Extensions.Enabled"]
        if not enabled:
            log.info("event=extensions_disabled reason='Extensions.Enabled=n'")
        w.status("running" if enabled else
                 "extension processing disabled (Extensions.Enabled=n); status reported")
        while True:
            w.tick()
            started = time.monotonic()
            try:
                # Every step is bounded by its own timeouts (HTTP, downloads, the broker's
                # command deadlines): heartbeats flow while it runs.
                with w.working():
                    self.iteration(enabled)
            except (PlatformError, OSError) as e:
                self.errors_logged += 1
                if self.errors_logged <= 3 or self.errors_logged % 600 == 0:
                    log.warning("event=goal_state_loop_error error=%r", str(e)[:500])
            self.sleep(max(0.0, self.period() - (time.monotonic() - started)))

    def period(self) -> float:
        """Extensions.InitialGoalStatePeriod until the first goal state has converged (every
        extension in it terminal), then Extensions.GoalStatePeriod (§9.2). Converged is
        remembered in the worker's folder (waagent's initial_goal_state file), so a restart
        keeps the regular period."""
        initial = self.conf["Extensions.InitialGoalStatePeriod"]
        if initial is None or self.converged():
            return float(self.conf["Extensions.GoalStatePeriod"])
        return float(initial)

    def converged(self) -> bool:
        if self._converged:
            return True
        marker = os.path.join(self.folder, "initial_goal_state")
        if os.path.exists(marker):
            self._converged = True
        elif self.config is not None and not self.pending and self.goal_state_report and \
                all(self._terminal(h) for h in self.config.handlers):
            with open(marker, "w") as f:
                f.write("%s\n" % (self.incarnation or ""))
            log.info("event=initial_goal_state_converged incarnation=%s", self.incarnation)
            self._converged = True
        return self._converged

    def _terminal(self, h: ExtensionHandler) -> bool:
        rep = self.reports.get(h.name.lower())
        if rep is None:
            return h.state != "enabled"
        return all(e.status.get("status") != "transitioning" for e in rep.extensions)

    def sleep(self, seconds: float) -> None:
        """Wait between polls, the loop turning at least once per heartbeat interval."""
        w = self.worker
        deadline = time.monotonic() + seconds
        while True:
            w.tick()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            w.wait(min(left, w.heartbeat_interval))

    def broker_state(self) -> dict:
        result, _ = self.worker.call("extensions.state", {})
        return result

    # ---- one turn -------------------------------------------------------------------------
    def iteration(self, enabled: bool = True) -> None:
        new = self.update_goal_state()
        if self.config is not None and (new or self.pending) and not self.cloud_init_running():
            self.pending = False
            if enabled:
                self.process(self.config)
            else:
                self.report_disabled(self.config)
            launch.release_free_memory()   # a new goal state's documents and packages are freed
        self.refresh_extension_statuses()
        self.upload_status()

    def cloud_init_running(self) -> bool:
        """Extensions.WaitForCloudInit (§9.2, waagent's `cloud-init status --wait`): while
        cloud-init is enabled and has not finished (no /run/cloud-init/result.json, which it
        writes at its end and `status --wait` waits for, nor /run/cloud-init/disabled), at
        most Extensions.WaitForCloudInitTimeout seconds from the first goal state, extensions
        wait; status is still uploaded every loop (waagent blocks its loop instead). Then,
        done or not, extensions run, as in waagent."""
        if not self.conf["Extensions.WaitForCloudInit"] or self.cloud_init_done:
            return False
        now = time.monotonic()
        if self.cloud_init_since is None:
            self.cloud_init_since = now
            if not cloud_init_enabled(self.conf["OS.SysRoot"]):
                log.info("event=cloud_init_not_waited reason='cloud-init is not enabled'")
                self.cloud_init_done = True
                return False
            log.info("event=cloud_init_waiting timeout=%ds",
                     self.conf["Extensions.WaitForCloudInitTimeout"])
        for marker in CLOUD_INIT_DONE:
            if os.path.exists(marker):
                log.info("event=cloud_init_completed marker=%s seconds=%.1f", marker,
                         now - self.cloud_init_since)
                self.cloud_init_done = True
                return False
        if now - self.cloud_init_since >= self.conf["Extensions.WaitForCloudInitTimeout"]:
            log.error("event=cloud_init_wait_timeout seconds=%d reason='will proceed to "
                      "execute VM extensions; extensions that conflict with cloud-init may "
                      "fail'", self.conf["Extensions.WaitForCloudInitTimeout"])
            self.cloud_init_done = True
            return False
        self.pending = True   # decide once it is done
        return True

    def update_goal_state(self) -> bool:
        """Fetch the goal state; True when there is a new extensions goal state to act on."""
        gs = self.client.goal_state()
        new = False
        if gs.incarnation != self.incarnation:
            try:
                full = self.client.full_goal_state(gs)
            except DocumentError as e:
                self._bad_goal_state(gs.incarnation, e)
                self.incarnation = gs.incarnation
                return False
            self.incarnation = gs.incarnation
            self.certificates_changed(gs)
            if full.extensions_config is not None:
                self.config = full.extensions_config
                self.goal_state_error = None
                new = True
                self.history.add(gs.incarnation, "",
                                 {"ExtensionsConfig.xml": full.extensions_config.redacted})
        if self.conf["Debug.EnableFastTrack"]:
            new = self._fast_track() or new
        return new

    def certificates_changed(self, gs) -> None:
        """On every new goal state (and after a FastTrack one that names a certificate we do
        not have), the tenant certificates, decrypted here with the transport key, go to the
        broker, which writes Lib.Dir/<THUMBPRINT>.crt|.prv (root, 0600) and removes those that
        left the goal state, before any extension command of this goal state runs: extensions
        decrypt their protectedSettings with them. A failure is logged; the commands still run
        (an extension without protectedSettings does not need them)."""
        try:
            self.certificates = self.fetch_certificates(gs) if gs.certificates_url else []
            install_for_extensions(self.worker, self.certificates)
        except PlatformError as e:
            log.error("event=certificates_not_installed incarnation=%s error=%r",
                      gs.incarnation, str(e)[:500])

    # ---- rare, heavy work: in a fork (launch/forked.py) ----------------------------------
    def in_fork(self, fn, error, seconds: float, max_bytes: int) -> bytes:
        """fn() in a short-lived fork of this worker: cryptography, asn1crypto and requests
        load there, never here, where they would stay for the life of the VM (issue 17)."""
        return forked.run(fn, error, time.monotonic() + seconds, max_bytes,
                          channel=self.worker.channel, http=self.client.http)

    def fetch_certificates(self, gs) -> List[CertificateRecord]:
        """The goal state's tenant certificates, decrypted in a fork with the transport key.
        The broker's descriptor of the key goes to the fork, which alone reads the key: it is
        never in this process's memory."""
        key_fd, certificate = transport_descriptor(self.worker)

        def decrypt() -> bytes:
            from workers.platform.certificates import load_transport
            self.client.set_transport(load_transport(key_fd, certificate))
            return json.dumps([[r.thumbprint, r.certificate_pem, r.private_key_pem]
                               for r in self.client.certificates(gs)]).encode()
        try:
            data = self.in_fork(decrypt, lambda message, code: CertificateError(message),
                                self.conf["Protocol.DownloadTimeout"], CERTIFICATES_BYTES)
        finally:
            os.close(key_fd)
        try:
            return [CertificateRecord(str(t), str(c), None if k is None else str(k))
                    for t, c, k in json.loads(data)]
        except (ValueError, TypeError) as e:
            raise CertificateError("the certificates from the fork do not read: %s"
                                   % type(e).__name__) from None

    def _fast_track(self) -> bool:
        try:
            vms = self.client.vm_settings(self.etag)
        except DocumentError as e:
            self._bad_goal_state("vmSettings", e)
            return False
        except PlatformError as e:
            log.debug("vmSettings unavailable: %s", e)
            return False
        self.fast_track = vms.supported
        if not (vms.supported and vms.changed) or vms.extensions_goal_state is None:
            return False
        self.etag = vms.etag
        egs = vms.extensions_goal_state
        if egs.is_fabric:
            return False
        # Whichever of ExtensionsConfig / vmSettings was created last; never backwards.
        mine = self.config.metadata.created_on if self.config and self.config.metadata else None
        theirs = egs.metadata.created_on if egs.metadata else None
        if mine is not None and theirs is not None and theirs < mine:
            return False
        self.config = egs
        self.goal_state_error = None
        self.history.add(self.incarnation or "", vms.etag or "", {"VmSettings.json": egs.redacted})
        if missing_certificates(egs, self.certificates):
            # A FastTrack goal state protected with a certificate this incarnation's set lacks
            # (after hibernate and resume the platform makes them anew): fetch them again.
            self.certificates_changed(self.client.goal_state())
        return True

    def _bad_goal_state(self, which: str, error: Exception) -> None:
        message = "goal state %s could not be parsed (%s); keeping the last good one" % (
            which, str(error)[:500])
        if message != self.goal_state_error:
            log.error("event=goal_state_invalid which=%s error=%r", which, str(error)[:500])
        self.goal_state_error = message
        self.goal_state_report = {"status": "Failed", "code": S.CODE_UNKNOWN, "message": message,
                                  "in_svd_seq_no": self._in_svd()}

    def _in_svd(self) -> str:
        md = self.config.metadata if self.config else None
        return (md.in_svd_seq_no if md else None) or ""

    # ---- deciding -------------------------------------------------------------------------
    def process(self, config: ExtensionsConfig) -> None:
        if config.ga_families and not self.ga_family_logged:
            self.ga_family_logged = True
            log.info("event=ga_family_ignored families=%s reason='agent self-update is not "
                     "supported: GAFamily packages are WALinuxAgent itself'",
                     ",".join(f.name for f in config.ga_families))
        unsupported = [f for f in config.required_features if f not in SUPPORTED_REQUIRED_FEATURES]
        if unsupported:
            self.goal_state_report = {
                "status": "Failed", "code": S.CODE_UNSUPPORTED_FEATURES,
                "message": "Failing GS as Unsupported features found: %s" % ", ".join(unsupported),
                "in_svd_seq_no": self._in_svd()}
            return
        if self.conf["EnableOverProvisioning"] and self.on_hold(config):
            log.info("event=extensions_on_hold reason='Extension handling is on hold'")
            self.goal_state_report = {"status": "Success", "code": 0,
                                      "message": "Extension handling is on hold",
                                      "in_svd_seq_no": self._in_svd()}
            return
        broker = self.broker_state()
        installed = self._installed(broker)
        ordered = self._ordered(config.handlers)
        levels = [self._level(h) for h in ordered if h.state == "enabled"]
        top = max(levels) if levels else 0
        deadline = time.monotonic() + float(self.conf["Extensions.DependencyTimeout"])
        blocked = None      # the dependency whose failure stops the later levels (§4.11)
        rules = policy.load(self.conf)
        if rules is not None and rules.error is not None:
            log.error("event=extension_policy_invalid path=%s error=%r", rules.path,
                      rules.error[:500])
        for handler in ordered:
            if blocked is not None and handler.state == "enabled":
                message = ("Skipping processing of extensions since execution of dependent "
                           "extension %s failed" % blocked)
                self._report(handler.name, handler.version, "NotReady", -1, message,
                             [S.ExtensionReport(s.sequence_number, S.error_status(
                                 handler.name, "Enable", -1, message), s.name)
                              for s in handler.settings])
                continue
            refusal = rules.refusal(handler.name) if rules is not None and \
                handler.state in ("enabled", "disabled") else None
            if refusal is not None:
                # Debug.EnableExtensionPolicy: neither downloaded nor run (§4.1).
                log.warning("event=extension_blocked_by_policy name=%s", handler.name)
                self._report(handler.name, handler.version, "NotReady", S.CODE_ENABLE, refusal,
                             [S.ExtensionReport(s.sequence_number, S.error_status(
                                 handler.name, "Enable", S.CODE_ENABLE, refusal), s.name)
                              for s in handler.settings])
                if handler.state == "enabled" and self._level(handler) < top:
                    blocked = handler.name
                continue
            try:
                self.handle(handler, installed.get(handler.name.lower(), {}))
                if handler.state == "enabled" and self._level(handler) < top and \
                        not self.wait_terminal(handler, deadline):
                    blocked = handler.name
            except Busy:
                self.pending = True
            except IpcError as e:
                self._report(handler.name, handler.version, "NotReady", S.CODE_PROCESSING,
                             "the broker refused: %s" % e.message)
            except CommandFailed as e:   # a disable or uninstall of this handler
                self._report(handler.name, handler.version, "NotReady", e.code, str(e))
            except (PlatformError, OSError) as e:
                # One handler's trouble never stops the others (§6).
                log.warning("event=handler_failed name=%s error=%r", handler.name, str(e)[:300])
                self._report(handler.name, handler.version, "NotReady", S.CODE_PROCESSING,
                             str(e)[:1000])
        wanted = {h.name.lower() for h in config.handlers}
        for lname, versions in installed.items():
            if lname in wanted:
                continue
            name = next(iter(versions.values()))["name"]
            try:
                self.uninstall(name, versions)
                self.reports.pop(lname, None)
            except Busy:
                self.pending = True
            except (IpcError, CommandFailed) as e:
                log.warning("event=uninstall_failed name=%s error=%r", name, str(e)[:300])
        for lname in list(self.reports):
            if lname not in wanted and lname not in installed:
                self.reports.pop(lname, None)
        self.goal_state_report = {
            "status": "Success" if not self.goal_state_error else "Failed",
            "code": 0 if not self.goal_state_error else S.CODE_UNKNOWN,
            "message": self.goal_state_error or "GoalState executed successfully",
            "in_svd_seq_no": self._in_svd()}

    def on_hold(self, config: ExtensionsConfig) -> bool:
        """The artifacts profile's onHold (vmSettings carries it; ExtensionsConfig names a
        blob, fetched like a manifest). Any failure is "not on hold", as waagent."""
        if isinstance(config, VmSettingsGoalState):
            return config.on_hold
        if not config.artifacts_profile_blob:
            return False
        try:
            data = self.in_fork(
                lambda: self.client.download([config.artifacts_profile_blob],
                                             is_manifest=True, max_bytes=64 * 1024),
                lambda message, code: PlatformError(message),
                self.conf["Protocol.DownloadTimeout"], 64 * 1024)
            value = json.loads(data).get("onHold", False)
        except (PlatformError, ValueError, AttributeError) as e:
            log.info("event=artifacts_profile_unusable error=%r", str(e)[:200])
            return False
        return value is True or (isinstance(value, str) and value.lower() == "true")

    @staticmethod
    def _installed(broker: dict) -> Dict[str, Dict[str, dict]]:
        out: Dict[str, Dict[str, dict]] = {}
        for h in broker["handlers"]:
            out.setdefault(h["name"].lower(), {})[h["version"]] = h
        return out

    @staticmethod
    def _level(h: ExtensionHandler) -> int:
        if h.settings:
            return max(s.dependency_level for s in h.settings)
        return h.dependency_level

    @classmethod
    def _ordered(cls, handlers) -> List[ExtensionHandler]:
        """§4.11: enabled handlers by dependencyLevel; removals first, in reverse order."""
        def key(h):
            level = cls._level(h)
            return level if h.state == "enabled" else -level - 1
        return sorted(handlers, key=key)

    def wait_terminal(self, h: ExtensionHandler, deadline: float) -> bool:
        """A dependency of later levels: wait (heartbeats flowing) until its status files say
        success or error, within the goal state's deadline; True only for success."""
        rep = self.reports.get(h.name.lower())
        if rep is None or rep.status != "Ready":
            return False
        interval = min(5.0, float(self.conf["Extensions.GoalStatePeriod"]))
        while True:
            self.refresh_extension_statuses(only=h.name.lower())
            states = [e.status.get("status") for e in rep.extensions]
            if states and all(st in ("success", "error") for st in states):
                return all(st == "success" for st in states)
            if time.monotonic() >= deadline:
                return False
            self.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def _report(self, name, version, state, code=0, message=None, extensions=None):
        rep = self.reports.get(name.lower())
        if rep is None or rep.version != version:
            rep = S.HandlerReport(name, version)
            self.reports[name.lower()] = rep
        rep.status, rep.code, rep.message = state, code, message
        if extensions is not None:
            rep.extensions = extensions
        return rep

    def report_disabled(self, config: ExtensionsConfig) -> None:
        for h in config.handlers:
            code = S.CODE_ENABLE if h.state == "enabled" else S.CODE_DISABLE
            exts = [S.ExtensionReport(s.sequence_number, S.error_status(
                h.name, "Enable", code, DISABLED_MESSAGE), s.name)
                for s in h.settings if h.state == "enabled"]
            self._report(h.name, h.version, "NotReady", code, DISABLED_MESSAGE, exts)
        self.goal_state_report = {"status": "Success", "code": 0,
                                  "message": "GoalState executed successfully",
                                  "in_svd_seq_no": self._in_svd()}

    # ---- one handler ----------------------------------------------------------------------
    def handle(self, h: ExtensionHandler, versions: Dict[str, dict]) -> None:
        if not h.valid:
            self._report(h.name, h.version, "NotReady", S.CODE_PROCESSING,
                         "invalid handler in the goal state: %s" % h.invalid_reason)
            return
        if h.state == "uninstall":
            if versions:
                self.uninstall(h.name, versions)
            self.reports.pop(h.name.lower(), None)
            return
        current = next((v for v in versions if packages.same_version(v, h.version)), None)
        if h.state == "disabled":
            if current is not None and self._enabled(versions[current]):
                self.command(h.name, current, "disable", self._seq(h))
            self._report(h.name, h.version, "NotReady", 0, "Plugin disabled")
            return
        # enabled
        manifest = None
        if current is None:
            self._report(h.name, h.version, "Installing", 0, "Installing")
            try:
                manifest = self.download_and_install(h)
            except packages.PackageError as e:
                self._report(h.name, h.version, "NotReady", e.code, str(e),
                             [S.ExtensionReport(self._seq(h), S.error_status(
                                 h.name, "Download", e.code, str(e)))])
                log.warning("event=package_failed name=%s version=%s error=%r", h.name,
                            h.version, str(e)[:300])
                return
            except IpcError as e:
                self._report(h.name, h.version, "NotReady", S.CODE_PACKAGE_EXTRACTION,
                             "package refused: %s" % e.message,
                             [S.ExtensionReport(self._seq(h), S.error_status(
                                 h.name, "Install", S.CODE_PACKAGE_EXTRACTION,
                                 "package refused: %s" % e.message))])
                log.warning("event=package_refused name=%s version=%s error=%r", h.name,
                            h.version, e.message[:300])
                return
            current = h.version
            versions = dict(self._installed(self.broker_state()).get(h.name.lower(), {}))
        record = versions.get(current, {"runs": []})
        old = [v for v in versions if v != current]
        last_install = self._last(record, ("install",))
        if last_install is not None and last_install["state"] == "running":
            raise Busy()
        if manifest is None and last_install is not None and last_install["exit_code"] != 0:
            # waagent's NotInstalled: on a new goal state a failed install is tried again
            # from a fresh download and a fresh folder (the broker runs install once a folder).
            self.worker.call("extensions.remove", {"name": h.name, "version": current})
            self.handle(h, {v: r for v, r in versions.items() if v != current})
            return
        known = manifest or self.manifest(h.name, current)
        if h.is_multi_config and known is not None and not known.supports_multiple_extensions:
            message = ("the goal state has several extensions for %s, whose HandlerManifest.json "
                       "does not support multiple extensions" % h.name)
            self._report(h.name, h.version, "NotReady", S.CODE_PROCESSING, message,
                         [S.ExtensionReport(s.sequence_number, S.error_status(
                             h.name, "Enable", S.CODE_PROCESSING, message), s.name)
                          for s in h.settings])
            return
        if not old and self._up_to_date(h, record):
            self._report(h.name, h.version, "Ready", 0, "Plugin enabled")
            return
        try:
            for s in (h.settings or (None,)):
                self.configure(h, current, s)
            if old and not self._ran(record, "install") and not self._ran(record, "update"):
                self.upgrade(h, current, max(old, key=packages.version_key), versions, manifest)
                record = self._installed(self.broker_state()).get(
                    h.name.lower(), {}).get(current, {"runs": []})
            elif not self._ran(record, "install"):
                self.command(h.name, current, "install", self._seq(h))
                self._report(h.name, h.version, "NotReady", 0,
                             "Plugin installed but not enabled")
            self.enable(h, current, record)
        except CommandFailed as e:
            seq = self._seq(h)
            self._report(h.name, h.version, "NotReady", e.code, str(e),
                         [S.ExtensionReport(seq, S.error_status(h.name, "Enable", e.code,
                                                                str(e)))])

    def enable(self, h: ExtensionHandler, version: str, record: dict) -> None:
        settings = h.settings or (None,)
        failures = []
        for s in settings:
            seq = s.sequence_number if s is not None else 0
            ext = s.name if s is not None else None
            last = self._last(record, ("enable", "disable"), ext)
            if s is not None and s.state == "disabled":
                # A multi-config extension disabled: disable it if it is enabled (§4.9).
                if last is not None and last["operation"] == "enable":
                    try:
                        self.command(h.name, version, "disable", seq, ext)
                    except CommandFailed as e:
                        log.warning("event=disable_failed name=%s extension=%s error=%r",
                                    h.name, ext, str(e)[:300])
                continue
            if last is not None and last["operation"] == "enable" and last["seq"] == seq:
                if last["state"] == "running":
                    raise Busy()
                if last["exit_code"] != 0:
                    raise CommandFailed(self._code_of(last, "enable"),
                                        "enable of seq %d failed before (%s)" % (
                                            seq, last["reason"]))
                continue   # ran already for this sequence number (before a restart, say)
            try:
                self.command(h.name, version, "enable", seq, ext)
            except CommandFailed as e:
                if len(settings) == 1:
                    raise
                failures.append((s, e))   # one extension's failure never blocks the others
        if failures:
            s, e = failures[0]
            raise CommandFailed(e.code, "enable of %s failed: %s" % (s.name, e))
        self._report(h.name, h.version, "Ready", 0, "Plugin enabled")

    def upgrade(self, h, new: str, old: str, versions, manifest) -> None:
        """§4.9 upgrade/downgrade: old disable, update (new's on upgrade, old's on downgrade),
        old uninstall, remove the old folder, new install (UpdateWithInstall), enable."""
        seq = self._seq(h)
        old_record = versions[old]
        disable_code = None
        cont = manifest.continue_on_update_failure if manifest else False
        if self._enabled(old_record):
            try:
                disable_code = self.command(h.name, old, "disable", seq)
            except CommandFailed as e:
                if not cont:
                    raise CommandFailed(S.CODE_UPDATE, "disable of %s failed: %s" % (old, e))
                disable_code = -1
        upgrading = packages.version_key(new) > packages.version_key(old)
        self.command(h.name, new if upgrading else old, "update", seq,
                     disable_exit_code=disable_code,
                     updating_from_version=old if upgrading else new,
                     code=S.CODE_UPDATE)
        uninstall_code = None
        try:
            uninstall_code = self.command(h.name, old, "uninstall", seq)
        except CommandFailed:
            if not cont:
                raise
            uninstall_code = -1
        self.worker.call("extensions.remove", {"name": h.name, "version": old})
        if manifest is None or manifest.update_with_install:
            self.command(h.name, new, "install", seq, uninstall_exit_code=uninstall_code)

    def uninstall(self, name: str, versions: Dict[str, dict]) -> None:
        for version, record in sorted(versions.items(), key=lambda v: packages.version_key(v[0])):
            last = self._last(record, ("install", "enable", "disable", "update", "uninstall"))
            if last is not None and last["state"] == "running":
                raise Busy()
            if self._enabled(record):
                try:
                    self.command(name, version, "disable", last["seq"] if last else 0)
                except CommandFailed as e:
                    log.warning("event=disable_failed name=%s error=%r", name, str(e)[:300])
            if self._ran(record, "install") and not self._ran(record, "uninstall"):
                try:
                    self.command(name, version, "uninstall", 0)
                except CommandFailed as e:
                    log.warning("event=uninstall_failed name=%s error=%r", name, str(e)[:300])
            self.worker.call("extensions.remove", {"name": name, "version": version})
            log.info("event=extension_uninstalled name=%s version=%s", name, version)

    # ---- helpers --------------------------------------------------------------------------
    def _up_to_date(self, h: ExtensionHandler, record: dict) -> bool:
        """Installed, and enabled at this sequence number with success: nothing to run (the
        settings file of that sequence number was written before its enable)."""
        if not self._ran(record, "install") or len(h.settings) > 1:
            return False
        last = self._last(record, ("enable", "disable"))
        return (last is not None and last["operation"] == "enable" and last["seq"] ==
                self._seq(h) and last["state"] == "done" and last["exit_code"] == 0)

    @staticmethod
    def _seq(h: ExtensionHandler) -> int:
        return h.settings[0].sequence_number if h.settings else 0

    @staticmethod
    def _ran(record: dict, op: str) -> bool:
        return any(r["operation"] == op for r in record.get("runs", ()))

    @staticmethod
    def _last(record: dict, ops, extension="*") -> Optional[dict]:
        """The last run of one of ops (of that multi-config extension, unless "*")."""
        for r in reversed(record.get("runs", ())):
            if r["operation"] in ops and (extension == "*" or r.get("extension") == extension):
                return r
        return None

    def _enabled(self, record: dict) -> bool:
        last = self._last(record, ("enable", "disable"))
        return last is not None and last["operation"] == "enable"

    @staticmethod
    def _code_of(run: dict, op: str) -> int:
        return S.CODE_TIMEOUT if run["reason"].startswith("timeout") else OP_CODES[op]

    def _manifest_path(self, name: str, version: str) -> str:
        return os.path.join(self.folder, "manifests", "%s-%s.json" % (name, version))

    def manifest(self, name: str, version: str) -> Optional[packages.HandlerManifest]:
        """The HandlerManifest.json of an installed version, as read from the package it
        verified (kept in the worker's folder; the broker reads its own copy to run). Parsed
        again only when the file changed (every poll asks, for reportHeartbeat)."""
        path = self._manifest_path(name, version)
        try:
            st = os.stat(path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._manifests.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
            with open(path, "rb") as f:
                manifest = packages.parse_handler_manifest(f.read(packages.MAX_MANIFEST_BYTES))
        except (OSError, packages.PackageError):
            self._manifests.pop(path, None)
            return None
        self._manifests[path] = (key, manifest)
        return manifest

    def download_and_install(self, h: ExtensionHandler):
        fd = packages.package_file(self.folder)
        try:
            def fetch() -> bytes:   # in a fork: the package goes to the file, not through here
                data, manifest = packages.fetch(self.client, h,
                                                self.conf["Extensions.MaxPackageBytes"])
                packages.write_package(fd, data)
                return packages.manifest_json(manifest)
            manifest = packages.parse_handler_manifest(self.in_fork(
                fetch, lambda message, code: packages.PackageError(code or 1004, message),
                self.conf["Protocol.DownloadTimeout"] + 60, packages.MAX_MANIFEST_BYTES))
            os.lseek(fd, 0, os.SEEK_SET)
            os.makedirs(os.path.join(self.folder, "manifests"), 0o700, exist_ok=True)
            from statefiles import write_atomic
            write_atomic(self._manifest_path(h.name, h.version),
                         packages.manifest_json(manifest))
            result, _ = self.worker.call("extensions.install",
                                         {"name": h.name, "version": h.version}, fds=[fd])
        finally:
            os.close(fd)
        log.info("event=package_installed name=%s version=%s files=%d", h.name, h.version,
                 result["files"])
        return manifest

    def configure(self, h: ExtensionHandler, version: str, s) -> None:
        if s is None:
            handler_settings = {"publicSettings": None, "protectedSettings": None,
                                "protectedSettingsCertThumbprint": None}
            seq, ext = 0, None
        else:
            handler_settings = {"publicSettings": s.public_settings,
                                "protectedSettings": s.protected_settings,
                                "protectedSettingsCertThumbprint": s.certificate_thumbprint}
            seq, ext = s.sequence_number, s.name
        doc = json.dumps({"runtimeSettings": [{"handlerSettings": handler_settings}]})
        self.worker.call("extensions.configure", {"name": h.name, "version": version,
                                                  "extension": ext, "seq": seq,
                                                  "settings": doc})

    def command(self, name: str, version: str, op: str, seq: int, extension=None,
                code: Optional[int] = None, **extra) -> int:
        """Run one operation through the broker; its exit code, or CommandFailed."""
        args = {"name": name, "version": version, "operation": op, "seq": seq,
                "extension": extension}
        address = self._wire_address()
        if address:
            args["wire_address"] = address
        for k, v in extra.items():
            if v is not None:
                args[k] = v
        timeout = float(self.conf[TIMEOUT_KEYS[op]]) + 60.0
        log.info("event=extension_command name=%s version=%s operation=%s seq=%d",
                 name, version, op, seq)
        try:
            result, _ = self.worker.call("extensions.run", args, timeout=timeout)
        except IpcError as e:
            if "is running" in e.message:
                raise Busy() from None
            raise CommandFailed(code or OP_CODES[op], "%s refused: %s" % (op, e.message)) \
                from None
        if result["exit_code"] == 0:
            return 0
        if result["exit_code"] is None:
            message = "%s: %s" % (result["reason"].replace("timeout", "Timeout", 1),
                                  result["command"])
            failure = S.CODE_TIMEOUT if result["reason"].startswith("timeout") else \
                (code or OP_CODES[op])
        else:
            output = result["output"]
            if len(output) > 2800:   # the head and the tail of what it printed (§4.10)
                output = "%s\n... [%d characters not kept] ...\n%s" % (
                    output[:1000], len(output) - 2800, output[-1800:])
            message = "Non-zero exit code: %d, %s\n%s" % (result["exit_code"],
                                                          result["command"], output)
            failure = code or OP_CODES[op]
        log.warning("event=extension_command_failed name=%s operation=%s reason=%s",
                    name, op, result["reason"])
        raise CommandFailed(failure, message[:3200])

    def _wire_address(self) -> Optional[str]:
        try:
            host = self.client.endpoint.host
        except Exception:  # noqa: B902 - an address is a courtesy to the extension
            return None
        parts = host.split(".")
        return host if len(parts) == 4 and all(p.isdigit() for p in parts) else None

    # ---- status ---------------------------------------------------------------------------
    def refresh_extension_statuses(self, only: Optional[str] = None) -> None:
        """Read each enabled extension's status file back through the broker (128 KiB cap),
        when it may have changed: the broker's watch on its status folder fired (or there is
        none), the handler reports a heartbeat (whose age moves on its own), or
        STATUS_REREAD_PERIOD passed (a write the watch cannot see: through a hard link).
        Otherwise the last answer stands (issue 17: an idle poll does not wake the broker).
        `only` (right after a command ran) reads that handler whatever the watch says."""
        if self.config is None:
            return
        changed = only is not None or self.status_watch.fired()
        now = time.monotonic()
        seen = set()
        for h in self.config.handlers:
            if only is not None and h.name.lower() != only:
                continue
            rep = self.reports.get(h.name.lower())
            if rep is None or rep.status not in ("Ready",) or h.state != "enabled":
                continue
            manifest = self.manifest(h.name, rep.version)
            beats = manifest is not None and manifest.report_heartbeat
            exts = []
            heartbeat = None
            for s in (h.settings or (None,)):
                seq = s.sequence_number if s is not None else 0
                key = (h.name.lower(), rep.version, seq, s.name if s is not None else None)
                seen.add(key)
                got, at = self.statuses.get(key, (None, 0.0))
                if got is None or changed or beats or not got["watched"] or \
                        now - at >= STATUS_REREAD_PERIOD:
                    try:
                        got, fds = self.worker.call("extensions.read_status", {
                            "name": h.name, "version": rep.version, "seq": seq,
                            "extension": s.name if s is not None else None},
                            fds=self.status_watch.fds())
                    except IpcError as e:
                        self.statuses.pop(key, None)
                        exts.append(S.ExtensionReport(seq, S.error_status(
                            h.name, "Enable", S.CODE_STATUS_INVALID, e.message)))
                        continue
                    for fd in fds:
                        os.close(fd)
                    self.statuses[key] = (got, now)
                st = S.extension_status(h.name, seq, got["status"], got["status_size"],
                                        got["status_error"])
                exts.append(S.ExtensionReport(seq, st, s.name if s is not None else None))
                heartbeat = got
            rep.extensions = exts
            if beats and heartbeat is not None:
                state, code, message = S.heartbeat_status(heartbeat["heartbeat"],
                                                          heartbeat["heartbeat_age"])
                rep.status, rep.code, rep.message = state, code, message
        if only is None and len(self.statuses) > len(seen):
            # What left the goal state (an old sequence number, a version) goes.
            self.statuses = {k: v for k, v in self.statuses.items() if k in seen}

    def upload_status(self) -> None:
        handlers = sorted(self.reports.values(), key=lambda r: r.name.lower())
        report = self.goal_state_report
        if report is None and self.goal_state_error:
            report = {"status": "Failed", "code": S.CODE_UNKNOWN,
                      "message": self.goal_state_error}
        blob = S.vm_status(handlers, report, fast_track=self.fast_track)
        config = self.config
        try:
            self.client.upload_status(blob, config)
        except ResourceGoneError:
            self.incarnation = None   # refetch everything next turn
            raise
        self.history.save_status("waagent_status.json", blob, time.monotonic())
