"""The provisioning DVD (protocol.md §3.3): mount read-only in a private place, read
ovf-env.xml with a size cap, unmount, eject (eject(1), else the CDROMEJECT ioctl); save a copy
with the password replaced by `*`.

The device is DVD.Device, else the first /dev entry named like a CD (sr0, cdrom0, hdc...,
vdb...). Mounted with `mount -o ro,nosuid,nodev,noexec -t udf,iso9660` in DVD.MountPoint
(root, 0700), up to 5 attempts DVD.MountRetryDelay apart. A DVD.Device that is a folder is
bind-mounted read-only instead: the host tests' stand-in for the media, since their kernel
mounts neither iso9660 nor udf (the same path reads a real image in a VM).

The bytes read are kept in the broker, not in a file a worker could replace, so custom data
runs only from bytes the broker read itself (DESIGN.md principle 2; customdata.py). The broker
does not parse the document (principle 1): the saved copy's redaction is a byte substitution,
and the one fact it takes from it — which user the account verbs may touch — comes from
ovf_user_of(), a bounded check of those bytes rather than an XML parser (see there).
"""

import fcntl
import logging
import os
import re
import stat
import threading
from typing import Optional

from ipc.verbs import provisioning as P
from supervisor.broker import PROV, PROVISIONING, Context, Privileged
from supervisor.privileged import (atomic_write, ensure_root_dir, fail, lib_dir, read_capped,
                                   run, which)

log = logging.getLogger("guestagent.broker.provisioning")

OVF_NAME = "ovf-env.xml"
MAX_OVF_BYTES = 256 * 1024
BOM = b"\xef\xbb\xbf"
DEVICE_RE = re.compile(r"(sr[0-9]|hd[c-z]|cdrom[0-9]|cd[0-9]|vd[b-z])")
MOUNT_ATTEMPTS = 5
CDROMEJECT = 0x5309   # linux/cdrom.h
_PASSWORD_RE = re.compile(
    rb"(<(?:[A-Za-z_][\w.-]*:)?UserPassword\b[^>]*>)(?:<!\[CDATA\[.*?\]\]>|[^<])*"
    rb"(</(?:[A-Za-z_][\w.-]*:)?UserPassword\s*>)", re.DOTALL)

# Any element named UserName, with or without a namespace prefix (`ns1:` occurs in real
# ovf-env.xml), opening, closing or empty; and the one form accepted: <p:UserName>text</p:UserName>.
_NAME = rb"(?:([A-Za-z_][A-Za-z0-9_.-]{0,31}):)?UserName"
_USERNAME_TAG = re.compile(rb"<" + _NAME + rb"(?=[\s/>])")
_USERNAME_ELEMENT = re.compile(rb"<" + _NAME + rb">([^<]{1,64})</" + _NAME + rb"\s*>")
_USERNAME_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")   # ipc.schema USERNAME, without `$`

_held_lock = threading.Lock()
_held: Optional[bytes] = None
_user: Optional[str] = None


def ovf_user_of(data: bytes) -> Optional[str]:
    """The UserName of an ovf-env.xml, or None when it is not exactly one plain element.

    Why not an XML parser: the supervisor parses no platform data (DESIGN.md principle 1), and
    this is the one fact the broker needs from the document — which account the worker may
    provision. The check is narrow and fails closed: exactly one opening tag named UserName
    (any prefix) anywhere in the bytes — so a second one in a comment, CDATA or another
    section makes it None — written `<p:UserName>text</p:UserName>` with the same prefix on
    both tags, no attributes, no entity or CDATA in the text, and the text (spaces around it
    ignored) a plain account name. Where the worker's real parser reads the document
    differently, the account verbs are refused, which is safe: provisioning fails with the
    reason rather than touching an account the broker did not see."""
    if len(data) > MAX_OVF_BYTES or len(_USERNAME_TAG.findall(data)) != 1:
        return None
    m = _USERNAME_ELEMENT.search(data)
    if m is None or m.group(1) != m.group(3):
        return None
    try:
        name = m.group(2).decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return name if _USERNAME_RE.fullmatch(name) else None


def ovf_user() -> Optional[str]:
    """The user named by the ovf-env.xml this broker last read (None if none was read)."""
    with _held_lock:
        return _user


def _hold_user(data: Optional[bytes]) -> None:
    global _user
    user = ovf_user_of(data) if data is not None else None
    with _held_lock:
        _user = user


def held_ovf() -> Optional[bytes]:
    """The ovf-env.xml bytes this broker last read from the DVD (None if none)."""
    with _held_lock:
        return _held


def _hold(data: Optional[bytes]) -> None:
    global _held
    with _held_lock:
        _held = data


def redact(data: bytes) -> bytes:
    return _PASSWORD_RE.sub(rb"\1*\2", data)


def find_device(conf) -> Optional[str]:
    if conf["DVD.Device"]:
        return conf["DVD.Device"]
    try:
        names = sorted(os.listdir("/dev"))
    except OSError:
        return None
    for name in names:
        if DEVICE_RE.fullmatch(name):
            return os.path.join("/dev", name)
    return None


def _mounted_at(device: str) -> Optional[str]:
    real = os.path.realpath(device)
    try:
        with open("/proc/self/mounts", "rb") as f:
            text = f.read(1024 * 1024).decode("utf-8", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] in (device, real):
            return fields[1].replace("\\040", " ")
    return None


def _read_ovf(folder: str) -> bytes:
    data = read_capped(os.path.join(folder, OVF_NAME), MAX_OVF_BYTES)
    if data is None:
        raise fail("the provisioning media has no %s" % OVF_NAME)
    return data[len(BOM):] if data.startswith(BOM) else data


def _mount_and_read(ctx: Context, device: str) -> bytes:
    already = _mounted_at(device)
    if already:
        log.info("event=dvd_already_mounted device=%s at=%s", device, already)
        return _read_ovf(already)
    mount_point = ctx.conf["DVD.MountPoint"]
    ensure_root_dir(mount_point, 0o700)
    is_folder = stat.S_ISDIR(os.stat(device).st_mode)
    if is_folder:
        argv = ["mount", "--bind", "-o", "ro", device, mount_point]
    else:
        argv = ["mount", "-o", "ro,nosuid,nodev,noexec", "-t", "udf,iso9660", device,
                mount_point]
    delay = ctx.conf["DVD.MountRetryDelay"]
    for attempt in range(1, MOUNT_ATTEMPTS + 1):
        code, out = run(argv, timeout=60, check=False, cancel=ctx.cancel)
        if code == 0:
            break
        log.warning("event=dvd_mount_failed device=%s attempt=%d output=%r", device, attempt,
                    out[-200:])
        if attempt == MOUNT_ATTEMPTS or ctx.cancel.wait(delay):
            raise fail("cannot mount %s: %s" % (device, out[-200:] or "mount failed"))
    if is_folder:
        # A bind mount ignores ro on its first call on older util-linux: make sure.
        run(["mount", "-o", "remount,bind,ro", mount_point], timeout=30, check=False)
    try:
        return _read_ovf(mount_point)
    finally:
        code, out = run(["umount", mount_point], timeout=60, check=False)
        if code != 0:
            log.warning("event=dvd_umount_failed at=%s output=%r", mount_point, out[-200:])
        if not is_folder and not os.path.basename(device).startswith("vd"):
            # Not before the reply: nothing waits for the tray, and eject(1) is a
            # process start and a drive command (~0.5 s of the boot's path under TCG, issue 17).
            threading.Thread(target=eject, args=(device,), name="eject", daemon=True).start()


def eject(device: str) -> bool:
    """eject(1) as waagent does; a minimal image without it (Debian ships it apart from
    util-linux) gets the kernel's CDROMEJECT ioctl on the device instead."""
    if which("eject"):
        code, out = run(["eject", device], timeout=60, check=False)
        if code != 0:
            log.warning("event=dvd_eject_failed device=%s output=%r", device, out[-200:])
        else:
            log.info("event=dvd_ejected device=%s how=eject", device)
        return code == 0
    try:
        fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, CDROMEJECT)
        finally:
            os.close(fd)
    except OSError as e:
        log.warning("event=dvd_eject_failed device=%s how=ioctl error=%r", device, e.strerror)
        return False
    log.info("event=dvd_ejected device=%s how=ioctl", device)
    return True


def read_ovf(ctx: Context, args: dict) -> dict:
    folder = lib_dir(ctx.conf)
    saved = os.path.join(folder, OVF_NAME)
    if args["source"] == "saved":
        # cloud-init's copy, in root's 0700 folder: its user counts as the OVF's (custom
        # data, though, runs only from bytes read off the DVD).
        data = read_capped(saved, MAX_OVF_BYTES)
        if data is None:
            return {"ovf": None, "device": None}
        data = data[len(BOM):] if data.startswith(BOM) else data
        text = _decode(data)
        _hold_user(data)
        return {"ovf": text, "device": None}
    device = find_device(ctx.conf)
    if device is None or not os.path.exists(device):
        raise fail("no provisioning media: %s" % (
            "DVD.Device %s does not exist" % device if device else "no DVD device found"))
    data = _mount_and_read(ctx, device)
    text = _decode(data)
    atomic_write(saved, redact(data), 0o600)
    _hold(data)
    _hold_user(data)
    log.info("event=ovf_user user=%s", ovf_user() or "none (account verbs refused)")
    log.info("event=ovf_read device=%s bytes=%d saved=%s", device, len(data), saved)
    return {"ovf": text, "device": device}


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("%s is not UTF-8" % OVF_NAME) from None


VERBS = (
    Privileged(P.READ_OVF, read_ovf, PROV, gate=PROVISIONING, slow=True),
)
