"""One QEMU guest: boot, run commands over ssh, reboot, power off.

The VM boots the agent image's kernel directly (``-kernel/-initrd``) under TCG (this host's
/dev/kvm cannot boot a Debian kernel, see tests/system/README.md) from a qcow2 overlay of its
own, so it survives reboots (no ``-no-reboot``: a guest reboot resets the machine and boots the
same overlay again). Networking is QEMU user mode with ``restrict=on``: the guest reaches only
the forwards of 10.0.2.100 to servers on the host's 127.0.0.1, and the host reaches the guest's
sshd through a 127.0.0.1 port. The provisioning DVD is an ISO on the CD-ROM (/dev/sr0), the
resource disk a blank second virtio disk (/dev/vdb), and ``-uuid`` gives the SMBIOS system UUID
the agent reads as the VM id.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from .image import WIRE_ADDRESS


_SSH_FAILURE = re.compile(r"^(ssh: |kex_exchange_identification|Connection (closed|reset|refused)"
                          r"|Connection timed out during banner exchange"
                          r"|mux_client_|Control socket connect)", re.M)
# Failures before the session starts: the command never ran, so running it again is safe.
# They happen when the connection lands while sshd restarts; provisioning restarts it on
# purpose after it regenerates the host keys (protocol.md, as waagent does), or when a guest
# busy under emulation answers the banner after ssh's ConnectTimeout.
_SSH_BEFORE_SESSION = re.compile(r"^(kex_exchange_identification|ssh: connect to host .*: "
                                 r"Connection refused|Connection (reset|closed) by .* port \d+"
                                 r"|Connection timed out during banner exchange)", re.M)
SSH_RETRY_SECONDS = 60


class VMError(RuntimeError):
    pass


@dataclass
class Result:
    cmd: str
    rc: int
    out: str
    err: str
    seconds: float

    def __str__(self):
        return (f"$ {self.cmd}\n[rc={self.rc}, {self.seconds:.1f}s]\n{self.out}"
                + (f"\n[stderr]\n{self.err}" if self.err else ""))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VM:
    """A guest booted from ``image`` (an :class:`~guestvm.image.AgentImage`).

    ``forwards`` maps a guest port on 10.0.2.100 to a host port on 127.0.0.1. ``dvd`` is a
    folder whose files go on the provisioning ISO, or a ready ``.iso`` (None: no DVD). ``resource_disk`` is the size
    of the blank second disk ("0": none).
    """

    def __init__(self, image, workdir, *, forwards=None, dvd=None, resource_disk="1G",
                 vm_uuid=None, smp=2, mem_mb=1024, name="vm"):
        self.image = image
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.forwards = dict(forwards or {})
        self.dvd = dvd
        self.resource_disk = resource_disk
        self.uuid = vm_uuid or str(uuidlib.uuid4())
        self.smp, self.mem_mb, self.name = smp, mem_mb, name
        self.ssh_port = None
        self.proc = None
        self.boots = []  # seconds from power-on/reboot to ssh answering, per boot
        # A unix socket path must stay short: the multiplexing socket lives in /tmp.
        self._ctl_dir = tempfile.mkdtemp(prefix="gvm-")
        self.serial_log = self.dir / "serial.log"
        self._console_mark = 0

    # ---- lifecycle -------------------------------------------------------------------
    def _qemu_cmd(self):
        d = self.dir
        net = ["user", "id=n0", "restrict=on", "ipv6=off",
               f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"]
        for gport, hport in sorted(self.forwards.items()):
            # cmd: spawns one socat per guest connection (a tcp: chardev would serve only one).
            net.append(f"guestfwd=tcp:{WIRE_ADDRESS}:{int(gport)}-cmd:"
                       f"socat - TCP:127.0.0.1:{int(hport)}")
        cmd = ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg,thread=multi",
               "-smp", str(self.smp), "-m", str(self.mem_mb),
               "-nodefaults", "-display", "none", "-uuid", self.uuid,
               "-name", self.name,
               "-chardev", f"file,id=ser0,path={self.serial_log}", "-serial", "chardev:ser0",
               "-monitor", f"unix:{d / 'monitor.sock'},server,nowait",
               "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
               "-append", "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=1 "
               "systemd.status_unit_format=name",
               "-drive", f"file={d / 'root.qcow2'},if=virtio,format=qcow2,cache=unsafe"]
        if self.resource_disk not in (None, "0", 0):
            cmd += ["-drive", f"file={d / 'resource.qcow2'},if=virtio,format=qcow2,cache=unsafe"]
        if self.dvd is not None:
            cmd += ["-cdrom", str(d / "dvd.iso")]
        cmd += ["-netdev", ",".join(net), "-device", "virtio-net-pci,netdev=n0",
                "-device", "virtio-rng-pci"]
        return cmd

    def start(self, timeout=300):
        d = self.dir
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                        "-b", str(self.image.disk), str(d / "root.qcow2")], check=True)
        if self.resource_disk not in (None, "0", 0):
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                            str(d / "resource.qcow2"), str(self.resource_disk)], check=True)
        if self.dvd is not None:
            make_dvd(self.dvd, d / "dvd.iso")
        return self._launch(timeout)

    def _launch(self, timeout):
        d = self.dir
        self.ssh_port = free_port()
        cmd = self._qemu_cmd()
        (d / "qemu-cmdline.txt").write_text(shlex.join(cmd) + "\n")
        self._t_power = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=open(d / "qemu.log", "wb"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.wait_ssh(timeout, since=self._t_power)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _ssh_base(self, master=True, connect_timeout=20):
        opts = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=12",
                "-i", str(self.image.key), "-p", str(self.ssh_port)]
        if master:
            opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._ctl_dir}/m",
                     "-o", "ControlPersist=900"]
        else:
            opts += ["-o", "ControlPath=none"]
        return ["ssh"] + opts + ["root@127.0.0.1"]

    def _probe_ssh(self, connect_timeout):
        p = subprocess.run(self._ssh_base(master=False, connect_timeout=connect_timeout)
                           + ["true"], capture_output=True, text=True, timeout=90,
                           stdin=subprocess.DEVNULL)
        return p.returncode == 0, p.stderr.strip()

    def wait_ssh(self, timeout=300, since=None):
        """Wait until the guest's sshd answers (after a READY newer than the console mark).

        The image's guestvm-ready.service prints "guestvm: READY boot_id=..." on the serial
        console once multi-user.target and sshd are up; watching for it is cheap, whereas an
        ssh probe to a guest that is still booting can hang for its whole ConnectTimeout
        (slirp accepts the host-side connection at once). Probes still run now and then, for
        images without the marker."""
        since = since or time.monotonic()
        deadline = since + timeout
        last, last_probe = "", time.monotonic()
        marker = "guestvm: READY boot_id="
        while time.monotonic() < deadline:
            if not self.alive():
                raise VMError(f"QEMU exited (rc={self.proc.returncode}); see {self.dir}/qemu.log "
                              f"and {self.serial_log}\n{self.tail_serial()}")
            ready = marker in self.console()[self._console_mark:]
            if ready or time.monotonic() - last_probe > 20:
                ok, last = self._probe_ssh(20 if ready else 5)
                last_probe = time.monotonic()
                if ok:
                    self.boots.append(time.monotonic() - since)
                    # Open the multiplexing master now: later commands skip the handshake.
                    self.run("true", timeout=60)
                    return self.boots[-1]
            time.sleep(0.5)
        raise VMError(f"no ssh after {timeout}s ({last}); serial console:\n{self.tail_serial()}")

    def console(self):
        """The serial console so far, without terminal colour codes."""
        try:
            text = self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return re.sub(r"\x1b\[[0-9;]*m", "", text)

    def tail_serial(self, n=40):
        try:
            lines = self.serial_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])

    def run(self, cmd, timeout=120, check=False, input=None):
        """Run ``cmd`` (a shell command line) as root in the guest; return a :class:`Result`."""
        if not self.alive():
            raise VMError(f"VM is not running; serial console:\n{self.tail_serial()}")
        t0 = time.monotonic()
        retry_until = t0 + SSH_RETRY_SECONDS
        while True:
            try:
                p = subprocess.run(self._ssh_base() + [cmd], capture_output=True,
                                   timeout=timeout,
                                   input=input.encode() if isinstance(input, str) else input,
                                   stdin=None if input is not None else subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise VMError(f"timeout after {timeout}s: {cmd}")
            r = Result(cmd, p.returncode, p.stdout.decode(errors="replace"),
                       p.stderr.decode(errors="replace"), time.monotonic() - t0)
            with open(self.dir / "commands.log", "a") as f:
                f.write(str(r) + "\n\n")
            if (p.returncode == 255 and not p.stdout and _SSH_BEFORE_SESSION.search(r.err)
                    and time.monotonic() < retry_until and self.alive()):
                self._close_master()  # a master left half-open would fail the same way
                time.sleep(1)
                continue
            break
        if p.returncode == 255 and _SSH_FAILURE.search(r.err):
            # ssh's own failure, not the command's exit status 255.
            raise VMError(f"ssh failed: {r.err.strip()}\n{self.tail_serial(15)}")
        if check and r.rc != 0:
            raise VMError(f"command failed in the guest:\n{r}")
        return r

    def put(self, local, remote, mode="0644"):
        data = Path(local).read_bytes()
        self.run(f"cat > {shlex.quote(remote)} && chmod {mode} {shlex.quote(remote)}",
                 input=data, check=True)

    def put_text(self, remote, text, mode="0644"):
        self.run(f"cat > {shlex.quote(remote)} && chmod {mode} {shlex.quote(remote)}",
                 input=text, check=True)

    def boot_id(self):
        return self.run("cat /proc/sys/kernel/random/boot_id", check=True).out.strip()

    def _close_master(self):
        subprocess.run(["ssh", "-o", f"ControlPath={self._ctl_dir}/m", "-O", "exit",
                        "root@127.0.0.1"], capture_output=True, timeout=30)

    def reboot(self, timeout=300):
        """Reboot the guest (same overlay, same UUID); return seconds until ssh answered."""
        before = self.boot_id()
        self._console_mark = len(self.console())  # only a READY printed after this counts
        t0 = time.monotonic()
        self.run("systemctl reboot --no-block", check=True)
        self._close_master()
        self.wait_ssh(timeout, since=t0)
        if self.boot_id() == before:
            raise VMError("ssh answered but the guest has not rebooted")
        return self.boots[-1]

    def power_cycle(self, vm_uuid=None, timeout=300):
        """Power off and boot the same disks again, with a new SMBIOS UUID by default: the
        same overlay under a new VM id stands for a captured image deployed afresh. The DVD
        is attached again as it was at the first power-on. Returns seconds until ssh."""
        self.stop()
        self.uuid = vm_uuid or str(uuidlib.uuid4())
        self._ctl_dir = tempfile.mkdtemp(prefix="gvm-")
        # QEMU truncates its serial file: keep this power-on's console beside it.
        n = len(list(self.dir.glob("serial.*.log"))) + 1
        if self.serial_log.exists():
            self.serial_log.rename(self.dir / f"serial.{n}.log")
        self._console_mark = 0
        self._launch(timeout)
        return self.boots[-1]

    def stop(self, timeout=60):
        """Power off (ACPI), then kill QEMU if it does not exit in time."""
        if self.alive():
            try:
                subprocess.run(["socat", "-", f"UNIX-CONNECT:{self.dir / 'monitor.sock'}"],
                               input=b"system_powerdown\n", capture_output=True, timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        try:
            self._close_master()
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self._ctl_dir, ignore_errors=True)

    def discard_disks(self):
        """Remove the overlays (tens of MB each); logs stay."""
        for f in ("root.qcow2", "resource.qcow2", "dvd.iso"):
            (self.dir / f).unlink(missing_ok=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def make_dvd(source, iso):
    """An ISO9660 (Joliet + Rock Ridge) provisioning DVD labelled as Azure's, from a folder or
    a single ovf-env.xml, built without mounting anything. An ``.iso`` file (such as the
    ISO 9660 + UDF image of ``python -m emulator media``) is attached as it is."""
    source = Path(source)
    if source.is_file() and source.suffix == ".iso":
        shutil.copy(source, iso)
        return
    with tempfile.TemporaryDirectory() as stage:
        if source.is_dir():
            shutil.copytree(source, stage, dirs_exist_ok=True)
        else:
            shutil.copy(source, Path(stage) / "ovf-env.xml")
        subprocess.run(["genisoimage", "-quiet", "-V", "rd_rdfe_stable", "-J", "-r",
                        "-o", str(iso), stage], check=True)
