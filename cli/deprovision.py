"""`waagent -deprovision[+user] [-force]`: make a VM an image again (protocol.md §6, mapped to
guestagent's names).

The operator's command, run as root in the foreground: not a worker, not a broker verb. It
prints every warning first, asks "Do you want to proceed (y/n)" unless -force, then ignores
SIGINT while it acts, so a half-cleaned image is never left by a stray Ctrl-C.

What goes (in waagent's order): the agent is stopped (guestagent.service and a former waagent's
unit); the SSH host keys if Provisioning.RegenerateSshHostKeyPair=y; the DHCP leases; the
hostname becomes localhost.localdomain; root's password is locked if
Provisioning.DeleteRootPassword=y; Lib.Dir (/var/lib/waagent), Extension.LogDir
(/var/log/azure), guestagent's own state (Agent.StateDir), logs (Agent.LogDir) and runtime
folder's contents (Agent.RuntimeDir); /root/.bash_history and /var/log/waagent.log;
/etc/resolv.conf (unless systemd-resolved or resolvconf owns it); with +user, the account named
by Lib.Dir/ovf-env.xml, its home and its sudoers line; waagent's firewall unit and script, its
cgroup drop-ins and log-collector slice, and guestagent's firewall table. Not touched (§6.2):
other homes and sudoers lines, sshd_config, /etc/waagent.conf, packages, swap, resource disk.

Every path is taken under `root` (the CLI passes OS.SysRoot, "/" on a real VM), so tests run
the real code on a prefix tree; commands that act on the running system (systemctl, hostname,
nft) run only when root is "/", and account commands get `--prefix root` otherwise.
"""

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
from typing import Callable, List, Optional, TextIO, Tuple

HOSTNAME = "localhost.localdomain"
SERVICES = ("guestagent.service", "walinuxagent.service", "waagent.service")
LEASE_DIRS = ("var/lib/dhclient", "var/lib/dhcpcd", "var/lib/dhcp")
LEASE_GLOBS = (("var/db", re.compile(r"dhclient\.leases\..*")),
               ("var/lib/NetworkManager", re.compile(r"dhclient-.*\.lease")),
               ("run/systemd/netif/leases", re.compile(r".*")))
LOOSE_FILES = ("root/.bash_history", "var/log/waagent.log")
# §6.1 steps 10-11: what waagent wrote outside its folders (an image captured from a waagent
# VM carries them; guestagent writes none of these).
UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
WAAGENT_UNIT_FILES = ("waagent-network-setup.service", "azure-walinuxagent-logcollector.slice")
WAAGENT_DROPINS = ("10-Slice.conf", "11-CPUAccounting.conf", "12-CPUQuota.conf",
                   "13-MemoryAccounting.conf")
WAAGENT_UNITS = ("walinuxagent.service", "waagent.service")
NETWORK_SETUP_SCRIPT = "waagent-network-setup.py"
# guestagent's WireServer firewall (issue 14) must use this nft table, so deprovision finds it.
FIREWALL_TABLES = (("inet", "guestagent"),)
SUDOERS_FILE = "waagent"
# A misconfigured folder key (Agent.StateDir=/var/lib) must not take the system with it.
PROTECTED = ("var/lib", "var/log", "var/run", "usr/lib", "usr/local", "etc/ssh", "etc/systemd",
             "root/.ssh", "home")
UID_MIN = 1000
COMMAND_TIMEOUT = 120


class Deprovision:
    def __init__(self, conf, root: str = "/", with_user: bool = False, verbose: bool = False,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr):
        self.conf, self.root, self.with_user = conf, root or "/", with_user
        self.verbose = verbose
        self.out, self.err = out, err
        self.live = os.path.realpath(self.root) == "/"
        self.failures: List[str] = []
        self.user: Optional[str] = None
        self.user_warning: Optional[str] = None
        if with_user:
            self.user, self.user_warning = self._provisioned_user()

    # ---- paths ---------------------------------------------------------------------------
    def path(self, p: str) -> str:
        return os.path.join(self.root, p.lstrip("/"))

    def conf_path(self, key: str) -> Optional[str]:
        value = self.conf[key]
        return self.path(value) if value else None

    # ---- what it will do -----------------------------------------------------------------
    def warnings(self) -> List[str]:
        w = ["WARNING! The agent service will be stopped (guestagent, and waagent if present)."]
        if self.conf["Provisioning.RegenerateSshHostKeyPair"]:
            w.append("WARNING! All SSH host key pairs will be deleted.")
        w.append("WARNING! Cached DHCP leases will be deleted.")
        w.append("WARNING! The hostname will be set to %s." % HOSTNAME)
        if self.conf["Provisioning.DeleteRootPassword"]:
            w.append("WARNING! root password will be disabled. "
                     "You will not be able to login as root.")
        w.append("WARNING! The agents' state, logs and extension logs will be deleted (%s)."
                 % ", ".join(self.conf[k] for k in ("Lib.Dir", "Extension.LogDir",
                                                    "Agent.StateDir", "Agent.LogDir")))
        if self._resolv_action()[0] == "delete":
            w.append("WARNING! /etc/resolv.conf will be deleted.")
        if self.with_user:
            if self.user:
                w.append("WARNING! %s account and entire home directory will be deleted."
                         % self.user)
            else:
                w.append("WARNING! %s" % self.user_warning)
        return w

    def steps(self) -> List[Tuple[str, Callable[[], None]]]:
        s = [("stop the agent", self.stop_agent)]
        if self.conf["Provisioning.RegenerateSshHostKeyPair"]:
            s.append(("delete the SSH host keys", self.delete_host_keys))
        s += [("delete the DHCP leases", self.delete_leases),
              ("reset the hostname", self.reset_hostname)]
        if self.conf["Provisioning.DeleteRootPassword"]:
            s.append(("lock root's password", self.lock_root))
        s += [("delete the agents' state and logs", self.delete_state),
              ("delete loose files", self.delete_loose_files),
              ("reset resolv.conf", self.reset_resolv_conf)]
        if self.with_user and self.user:
            s.append(("delete user %s" % self.user, self.delete_user))
        s += [("delete waagent's units and firewall", self.delete_firewall_and_units)]
        return s

    def run(self, force: bool, answer: Callable[[str], str] = input) -> int:
        for line in self.warnings():
            print(line, file=self.out)
        if not force:
            try:
                reply = answer("Do you want to proceed (y/n)")
            except EOFError:
                reply = ""
            if not reply.strip().lower().startswith("y"):
                print("waagent: deprovision cancelled, nothing was changed", file=self.err)
                return 1
        # From here on an interrupted run would leave half an image.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name, step in self.steps():
            if self.verbose:
                print("waagent: deprovision: %s" % name, file=self.out)
            try:
                step()
            except OSError as e:
                self._failed("%s: %s" % (name, e))
        if self.failures:
            print("waagent: deprovision finished with %d problem(s)" % len(self.failures),
                  file=self.err)
            return 1
        return 0

    # ---- helpers -------------------------------------------------------------------------
    def _failed(self, message: str) -> None:
        self.failures.append(message)
        print("waagent: %s" % message, file=self.err)

    def _command(self, argv: List[str], quiet_codes=()) -> Optional[int]:
        exe = shutil.which(argv[0], path="/usr/sbin:/usr/bin:/sbin:/bin")
        if exe is None:
            return None
        try:
            proc = subprocess.run([exe] + argv[1:], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            self._failed("%s: %s" % (argv[0], e))
            return None
        if proc.returncode != 0 and proc.returncode not in quiet_codes:
            self._failed("%s exited %d: %s" % (" ".join(argv[:2]), proc.returncode,
                                               proc.stderr.strip()[-300:]))
        return proc.returncode

    def _remove(self, path: Optional[str]) -> None:
        """Remove a file, link or folder (never following a link) under root."""
        if not path:
            return
        rel = os.path.relpath(os.path.normpath(path), self.root)
        # A configured folder of "/" or "/var" would take the system with it: refused.
        if rel.startswith("..") or "/" not in rel or rel in PROTECTED:
            self._failed("refusing to delete %s" % path)
            return
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)

    def _empty(self, folder: Optional[str]) -> None:
        if folder and os.path.isdir(folder) and not os.path.islink(folder):
            for name in os.listdir(folder):
                self._remove(os.path.join(folder, name))

    def _provisioned_user(self) -> Tuple[Optional[str], Optional[str]]:
        from supervisor.privileged.dvd import MAX_OVF_BYTES, OVF_NAME, ovf_user_of
        ovf = os.path.join(self.conf_path("Lib.Dir") or self.path("var/lib/waagent"), OVF_NAME)
        try:
            with open(ovf, "rb") as f:
                data = f.read(MAX_OVF_BYTES + 1)
        except OSError:
            return None, "%s is missing: no user account will be deleted." % ovf
        user = ovf_user_of(data)
        if user is None:
            return None, "%s names no plain user: no user account will be deleted." % ovf
        uid = self._uid(user)
        if uid is None:
            return None, "%s has no account here: no user account will be deleted." % user
        if uid < UID_MIN:
            return None, "%s is a system account (uid %d): it will not be deleted." % (user, uid)
        return user, None

    def _uid(self, user: str) -> Optional[int]:
        if self.live:
            try:
                return pwd.getpwnam(user).pw_uid
            except KeyError:
                return None
        try:
            with open(self.path("etc/passwd")) as f:
                for line in f:
                    fields = line.split(":")
                    if len(fields) > 2 and fields[0] == user:
                        return int(fields[2])
        except (OSError, ValueError):
            pass
        return None

    def _prefix(self) -> List[str]:
        return [] if self.live else ["--prefix", self.root]

    # ---- the steps -----------------------------------------------------------------------
    def stop_agent(self) -> None:
        if self.live and os.path.isdir("/run/systemd/system"):
            # One at a time: 5 is "unit not loaded" (a former waagent's unit not installed).
            for service in SERVICES:
                self._command(["systemctl", "stop", service], quiet_codes=(5,))

    def delete_host_keys(self) -> None:
        folder = self.conf_path("OS.SshDir")
        if folder and os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.startswith("ssh_host_") and "key" in name:
                    self._remove(os.path.join(folder, name))

    def delete_leases(self) -> None:
        for d in LEASE_DIRS:
            self._remove(self.path(d))
        for d, pattern in LEASE_GLOBS:
            folder = self.path(d)
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if pattern.fullmatch(name):
                        self._remove(os.path.join(folder, name))

    def reset_hostname(self) -> None:
        path = self.path("etc/hostname")
        tmp = path + ".guestagent-tmp"
        with open(tmp, "w") as f:
            f.write(HOSTNAME + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        if self.live:
            self._command(["hostname", HOSTNAME])

    def lock_root(self) -> None:
        self._command(["usermod"] + self._prefix() + ["-p", "*LOCK*", "root"])

    def delete_state(self) -> None:
        for key in ("Lib.Dir", "Extension.LogDir", "Agent.StateDir", "Agent.LogDir"):
            self._remove(self.conf_path(key))
        # The runtime folder is tmpfiles.d's (root:guestagent-admin 0750): keep it, empty it.
        self._empty(self.conf_path("Agent.RuntimeDir"))

    def delete_loose_files(self) -> None:
        for p in LOOSE_FILES:
            self._remove(self.path(p))

    def _resolv_action(self) -> Tuple[str, List[str]]:
        path = self.path("etc/resolv.conf")
        if os.path.islink(path):
            target = os.readlink(path)
            if "systemd/resolve" in target:
                return "keep", []
            if "resolvconf" in target:
                return "resolvconf", [self.path("etc/resolvconf/resolv.conf.d/tail"),
                                      self.path("etc/resolvconf/resolv.conf.d/original")]
        return ("delete", [path]) if os.path.lexists(path) else ("keep", [])

    def reset_resolv_conf(self) -> None:
        for p in self._resolv_action()[1]:
            self._remove(p)

    def delete_user(self) -> None:
        utmp = self.path("var/run/utmp")
        if os.path.isdir(os.path.dirname(utmp)) and not os.path.lexists(utmp):
            open(utmp, "a").close()    # userdel -f checks utmp for logged-in sessions
        # 6: no such user; 12: the home could not be removed (reported by userdel itself).
        self._command(["userdel"] + self._prefix() + ["-f", "-r", self.user])
        sudoers = os.path.join(self.conf_path("OS.SudoersDir") or self.path("etc/sudoers.d"),
                               SUDOERS_FILE)
        if os.path.isfile(sudoers) and not os.path.islink(sudoers):
            with open(sudoers) as f:
                lines = f.readlines()
            kept = [line for line in lines if (line.split() or [""])[0] != self.user]
            if not kept:
                os.unlink(sudoers)
            elif kept != lines:
                tmp = sudoers + ".guestagent-tmp"
                with open(tmp, "w") as f:
                    f.writelines(kept)
                os.chmod(tmp, 0o440)
                os.replace(tmp, sudoers)

    def delete_firewall_and_units(self) -> None:
        for d in UNIT_DIRS:
            for name in WAAGENT_UNIT_FILES:
                self._remove(self.path(os.path.join(d, name)))
            for unit in WAAGENT_UNITS:
                for name in WAAGENT_DROPINS:
                    self._remove(self.path(os.path.join(d, unit + ".d", name)))
        lib = self.conf_path("Lib.Dir")
        if lib:
            self._remove(os.path.join(lib, NETWORK_SETUP_SCRIPT))   # gone with Lib.Dir already
        if self.live:
            for family, table in FIREWALL_TABLES:
                if shutil.which("nft") and subprocess.run(
                        ["nft", "list", "table", family, table], capture_output=True,
                        timeout=COMMAND_TIMEOUT).returncode == 0:
                    self._command(["nft", "delete", "table", family, table])
            if os.path.isdir("/run/systemd/system"):
                self._command(["systemctl", "daemon-reload"])
