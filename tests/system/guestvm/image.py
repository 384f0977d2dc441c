"""Guest images for the system tests.

Two layers, each cached by a content hash of its inputs:

* the *base*: a Debian bookworm root filesystem made by ``mmdebstrap`` with every package the
  agent and the tests need (the guest has no network, so nothing is installed at test time),
  plus the kernel, the initrd and an ssh key. Its inputs are :data:`BASE_PACKAGES`,
  :data:`BASE_RECIPE` and the files in ``guest/``. Building it takes about 80 s, once.
* the *agent image*: a copy of the base rootfs into which the project's Debian package
  (``make deb``, built once per run by :func:`build_deb`) is installed the way an image
  maintainer installs it: ``dpkg -i`` in a chroot (the code under /usr/lib/guestagent, the
  units, sysusers and tmpfiles, /usr/sbin/waagent, /etc/waagent.conf; the postinst creates the
  users and enables the unit), the QEMU-specific config keys appended, then ``mkfs.ext4 -d``
  into a raw disk image. No loop device, no mount. Its input is the package's contents
  (files, modes, maintainer scripts), not the .deb's bytes, which carry build times.

Each VM boots from its own qcow2 overlay on top of the agent image (see vm.py).
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUEST_FILES = HERE / "guest"
INSTRUMENT = HERE / "instrument"
PROJECT = HERE.parents[2]


def _package_list(path):
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


#: Everything the agent needs at run time comes from Debian (DESIGN.md "Dependencies"), plus what
#: the tests use in the guest. Changing this list rebuilds the base image.
BASE_PACKAGES = [
    # boot and systemd
    "systemd", "systemd-sysv", "dbus", "udev", "kmod", "linux-image-amd64", "initramfs-tools",
    # the agent's runtime: what the README tells an image maintainer to install
    *_package_list(PROJECT / "packaging" / "debian-runtime.txt"),
    # what the agent drives: users, disks, DVD, firewall, network
    "openssh-server", "sudo", "udftools", "e2fsprogs", "parted", "fdisk",
    "nftables", "iptables", "iproute2", "openssl", "ca-certificates",
    # for the tests in the guest
    "python3-pytest", "procps", "curl", "less",
]
#: Bump when the recipe below changes in a way the hashed files do not show.
BASE_RECIPE = "bookworm minbase v1"
DISK_SIZE = os.environ.get("GUESTAGENT_VM_DISK_SIZE", "4G")
MIRROR = os.environ.get("GUESTAGENT_VM_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("GUESTAGENT_VM_SECURITY_MIRROR",
                                 "http://deb.debian.org/debian-security")

#: Host commands the harness runs, and the Debian package each comes from.
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "genisoimage": "genisoimage",
    "socat": "socat",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "make": "make",
}

#: Where the Debian package puts the agent's private environment (packaging/build_deb.py).
GUEST_PREFIX = "/usr/lib/guestagent"
#: Keeps the maintainer scripts from starting anything in the chroot (policy-rc.d(8)).
POLICY_RC = "#!/bin/sh\nexit 101\n"

#: Guest-side addresses of the platform endpoints (QEMU user networking has no vmbus and no
#: 168.63.129.16; the harness forwards these guest ports on 10.0.2.100 to the host).
WIRE_ADDRESS = "10.0.2.100"
GUEST_PORTS = {"wireserver": 80, "hostgaplugin": 32526, "imds": 8080}

#: Appended to /etc/waagent.conf in the agent image: what differs in a QEMU VM.
QEMU_CONFIG = f"""
# --- added by tests/system (QEMU has no vmbus: name the devices, point at the emulator) ---
Protocol.Endpoint={WIRE_ADDRESS}
Protocol.HostPluginPort={GUEST_PORTS["hostgaplugin"]}
Protocol.ImdsEndpoint={WIRE_ADDRESS}:{GUEST_PORTS["imds"]}
DVD.Device=/dev/sr0
ResourceDisk.Device=/dev/vdb
# the shipped conf's resource disk, with a small swap file (tests/system/test_resource_disk.py)
ResourceDisk.Format=y
ResourceDisk.Filesystem=ext4
ResourceDisk.EnableSwap=y
ResourceDisk.SwapSizeMB=64
"""


def cache_root():
    root = Path(os.environ.get("GUESTAGENT_VM_CACHE", "/var/cache/guestagent-vm"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def missing_host_tools():
    return sorted({pkg for cmd, pkg in HOST_TOOLS.items() if shutil.which(cmd) is None})


def _log(msg):
    print(f"guestvm: {msg}", flush=True)


class _Lock:
    """An exclusive flock on a file in the cache, so two runs never build the same layer."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def _run(cmd, log=None, **kw):
    if log is None:
        return subprocess.run(cmd, check=True, **kw)
    with open(log, "ab") as f:
        try:
            return subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, **kw)
        except subprocess.CalledProcessError:
            f.flush()
            tail = Path(log).read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(f"{cmd[0]} failed; last lines of {log}:\n" + "\n".join(tail))


def _mounts_under(path):
    """Mount points at or below ``path``, deepest first (from /proc/self/mountinfo)."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def _remove(path):
    """Delete a build folder. A build killed half-way (mmdebstrap --mode=root mounts proc,
    sys, dev/pts and dev/shm in its rootfs; CI once found them left by a killed run) must
    not make every later run fail, nor let rmtree walk into a mounted filesystem: unmount
    what is mounted below it first."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=True)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        raise RuntimeError(f"could not remove the stale build folder {path}")


@dataclass
class BaseImage:
    dir: Path

    @property
    def rootfs(self):
        return self.dir / "rootfs"

    @property
    def kernel(self):
        return self.dir / "vmlinuz"

    @property
    def initrd(self):
        return self.dir / "initrd.img"

    @property
    def key(self):
        return self.dir / "id_ed25519"


@dataclass
class AgentImage:
    dir: Path
    base: BaseImage

    @property
    def disk(self):
        return self.dir / "root.raw"

    @property
    def kernel(self):
        return self.base.kernel

    @property
    def initrd(self):
        return self.base.initrd

    @property
    def key(self):
        return self.base.key


def base_key():
    h = hashlib.sha256()
    h.update(BASE_RECIPE.encode())
    h.update(" ".join(BASE_PACKAGES).encode())
    h.update(f"{MIRROR} {SECURITY_MIRROR}".encode())
    for f in sorted(GUEST_FILES.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_base(force=False):
    """Return the cached base image, building it (mmdebstrap, ~80 s) when its inputs changed."""
    cache = cache_root()
    out = cache / f"base-{base_key()}"
    with _Lock(cache / ".base.lock"):
        if (out / ".complete").exists() and not force:
            return BaseImage(out)
        t0 = time.monotonic()
        if out.exists():
            _remove(out)
        out.mkdir()
        log = out / "build.log"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "guestvm",
              "-f", str(out / "id_ed25519")])
        _log(f"building base image {out.name} with mmdebstrap (about 80 s; log {log})")
        tmp = out / "rootfs.tmp"
        _run(["mmdebstrap", "--mode=root", "--variant=minbase",
              "--include=" + ",".join(BASE_PACKAGES),
              "--dpkgopt=path-exclude=/usr/share/doc/*",
              "--dpkgopt=path-include=/usr/share/doc/*/copyright",
              "--dpkgopt=path-exclude=/usr/share/man/*",
              "--dpkgopt=path-exclude=/usr/share/locale/*",
              "--dpkgopt=path-exclude=/usr/share/info/*",
              f'--customize-hook="{GUEST_FILES}/customize.sh" "$1" "{out}/id_ed25519.pub"',
              "bookworm", str(tmp),
              f"deb {MIRROR} bookworm main", f"deb {MIRROR} bookworm-updates main",
              f"deb {SECURITY_MIRROR} bookworm-security main"], log=log)
        kver = sorted(p.name for p in (tmp / "lib/modules").iterdir())[0]
        shutil.copy(tmp / f"boot/vmlinuz-{kver}", out / "vmlinuz")
        shutil.copy(tmp / f"boot/initrd.img-{kver}", out / "initrd.img")
        pkgs = subprocess.run(["chroot", str(tmp), "dpkg-query", "-W",
                               "-f", "${Package} ${Version}\n"],
                              check=True, capture_output=True, text=True).stdout
        (out / "packages.txt").write_text(pkgs)
        (out / "kernel-version.txt").write_text(kver + "\n")
        tmp.rename(out / "rootfs")
        secs = time.monotonic() - t0
        (out / "build-seconds.txt").write_text(f"{secs:.1f}\n")
        (out / ".complete").touch()
        _log(f"base image built in {secs:.0f} s")
        _prune(cache, "base-", keep=out.name, count=1)
        return BaseImage(out)


def build_deb(dest):
    """``make deb``'s builder (packaging/build_deb.py) into ``dest``; returns the .deb's path.
    Run once per test session and shared by every image that installs the agent."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, str(PROJECT / "packaging" / "build_deb.py"), str(dest)],
                         check=True, capture_output=True, text=True, cwd=PROJECT).stdout
    return Path(out.strip().splitlines()[-1])


def deb_contents_hash(deb):
    """A hash of what the package installs and runs: each member's name, mode, owner, link
    target and bytes, of the data and of the control archive (dpkg-deb stamps build times
    into the .deb, so its bytes change at every build)."""
    import io
    import tarfile
    h = hashlib.sha256()
    for part in ("--fsys-tarfile", "--ctrl-tarfile"):
        raw = subprocess.run(["dpkg-deb", part, str(deb)], check=True,
                             capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for m in sorted(tar.getmembers(), key=lambda m: m.name):
                h.update(f"{m.name}\0{m.mode:o}\0{m.uid}:{m.gid}\0{m.type}\0{m.linkname}\0"
                         .encode())
                if m.isfile():
                    h.update(tar.extractfile(m).read())
    return h.hexdigest()


def agent_key(deb):
    h = hashlib.sha256()
    h.update(base_key().encode())
    h.update(QEMU_CONFIG.encode())
    h.update(Path(__file__).read_bytes())
    for f in sorted(INSTRUMENT.iterdir()):
        h.update(f.read_bytes())
    h.update(deb_contents_hash(deb).encode())
    return h.hexdigest()[:16]


def debian_debs(names):
    """These Debian packages (.deb files), `apt-get download`ed once from the host's apt
    sources (the archive the base image comes from) into the image cache."""
    cache = cache_root()
    folder = cache / ("former-debs-" + "-".join(names))
    with _Lock(cache / ".former-waagent.lock"):
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            cmd = ["apt-get", "download", *names]
            if subprocess.run(cmd, cwd=folder, capture_output=True).returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
                subprocess.run(cmd, cwd=folder, check=True, capture_output=True)
            (folder / ".complete").touch()
    return sorted(folder.glob("*.deb"))


def dpkg_install(rootfs, debs, log, *options):
    """``dpkg -i`` of these packages inside an image's root (chroot), nothing started."""
    rootfs = Path(rootfs)
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC)
    os.chmod(policy, 0o755)
    drop = rootfs / "tmp/guestvm-debs"
    drop.mkdir()
    try:
        names = []
        for deb in debs:
            shutil.copy(deb, drop / Path(deb).name)
            names.append("/tmp/guestvm-debs/" + Path(deb).name)
        _run(["chroot", str(rootfs), "dpkg", *options, "-i", *names], log=log)
    finally:
        shutil.rmtree(drop, ignore_errors=True)
        policy.unlink()


def build_agent_image(base, deb, enable=("guestagent.service",)):
    """Install the package into a copy of the base rootfs and make the VM's root disk."""
    cache = cache_root()
    out = cache / f"agent-{agent_key(deb)}"
    with _Lock(cache / ".agent.lock"):
        if (out / ".complete").exists():
            return AgentImage(out, base)
        t0 = time.monotonic()
        if out.exists():
            _remove(out)
        out.mkdir()
        log = out / "build.log"
        rootfs = out / "rootfs"
        try:
            _run(["cp", "-a", "--reflink=auto", str(base.rootfs), str(rootfs)], log=log)
            # The way the README tells an image maintainer to install the agent.
            dpkg_install(rootfs, [deb], log)
            with open(rootfs / "etc/waagent.conf", "a") as f:
                f.write(QEMU_CONFIG)
            # Test instrumentation, not part of the install: see instrument/.
            shutil.copy(INSTRUMENT / "guestagent-sampler", rootfs / "usr/local/sbin/")
            os.chmod(rootfs / "usr/local/sbin/guestagent-sampler", 0o755)
            shutil.copy(INSTRUMENT / "guestagent-sampler.service", rootfs / "etc/systemd/system/")
            enable = tuple(enable) + ("guestagent-sampler.service",)
            for unit in enable:
                _run(["chroot", str(rootfs), "systemctl", "enable", unit], log=log)
            _run(["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-E", "root_owner=0:0",
                  "-d", str(rootfs), str(out / "root.raw"), DISK_SIZE], log=log)
        finally:
            _remove(rootfs)
        secs = time.monotonic() - t0
        (out / "build-seconds.txt").write_text(f"{secs:.1f}\n")
        (out / ".complete").touch()
        _log(f"agent image {out.name} built in {secs:.1f} s")
        _prune(cache, "agent-", keep=out.name, count=3)
        return AgentImage(out, base)


def _prune(cache, prefix, keep, count):
    """Keep the newest ``count`` images of a kind (the current one always)."""
    dirs = sorted((d for d in cache.glob(prefix + "*") if d.name != keep and d.is_dir()),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[max(count - 1, 0):]:
        _remove(d)
