"""SSH (protocol.md §3.4 steps 9, 10, 11, 14, 15): sshd_config, the user's keys, host keys,
sshd restarted the distro's way.

Keys go into the user's home through HomeFile: no symlink followed below the home, no
hard-linked file written, folders 0700 and files owned by the user (authorized_keys 0600 as
azure-init does; a private key 0600 and its .pub 0644 — waagent's swapped modes are a quirk
not kept).

The broker decides from its own state: the account must be the OVF's user (accounts.py
ovf_account), the path exactly `<that user's home>/.ssh/<name>` (one plain name: no other
folder, no `..`, no other home), and a public key exactly one well-formed OpenSSH key line
(public_key_line). Nothing owned by root is chowned: a root-owned .ssh or file is refused.
"""

import base64
import binascii
import glob
import logging
import os
import re
import struct
import time
from concurrent.futures import ThreadPoolExecutor

from ipc.verbs import provisioning as P
from supervisor.broker import PROCESS, PROV, PROVISIONING, Context, Privileged
from supervisor.privileged import (SPARE_NICE, HomeFile, accounts, atomic_write, fail,
                                   first_to_finish, read_capped, run, searches, which)
from supervisor.privileged import platform

log = logging.getLogger("guestagent.broker.provisioning")

MAX_FILE = 1024 * 1024
HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")   # what `ssh-keygen -A` makes today
# Ready waits for the host keys, made beside the rest of provisioning: on a starved boot (two
# emulated vCPUs) the RSA 3072 prime search was the last thing done in every boot measured
# (6-18 s, sharing the CPU with the spawner's preload and the worker). Ahead of them, it gets
# most of a CPU. (At nice +10 Ready came later: benchmarks/README.md, 2026-12-06.)
HOST_KEY_NICE = -10
# They begin once the transport key is made (platform.py), which the worker needs sooner: at
# once, the RSA 3072 search at nice -10 took the CPU from it (made in 11-14 s, not 5).
TRANSPORT_KEY_WAIT = 30.0


# ---- sshd_config ----------------------------------------------------------------------------
def set_options(text: str, options) -> str:
    """waagent's edit: replace the first line of each option outside Match blocks, else insert
    it before the first Match block (other than `Match all`), else append.

    One difference: sshd keeps the first value it reads, and a top-level `Include` (Debian 12
    and Ubuntu open their sshd_config with `Include /etc/ssh/sshd_config.d/*.conf`) reads its
    files where it stands. A line after it loses to any drop-in that sets the same option
    (cloud images ship one that sets PasswordAuthentication), so the VM owner's choice would
    silently not apply. Our line goes before the first such Include instead."""
    lines = text.splitlines()
    for key, value in options:
        wanted = "%s %s" % (key, value)
        in_match = False
        first_match = first_include = None
        target = None
        for i, line in enumerate(lines):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            head = words[0].lower()
            if head == "match":
                in_match = not (len(words) > 1 and words[1].lower() == "all")
                if in_match and first_match is None:
                    first_match = i
                continue
            if not in_match and head == "include" and first_include is None:
                first_include = i
            if not in_match and head == key.lower():
                target = i
                break
        if target is not None and (first_include is None or target < first_include):
            lines[target] = wanted
            continue
        if target is not None:
            del lines[target]
        if first_include is not None:
            lines.insert(first_include, wanted)
        elif first_match is not None:
            lines.insert(first_match, wanted)
        else:
            lines.append(wanted)
    return "\n".join(lines) + "\n"


def sshd_config(ctx: Context, args: dict) -> dict:
    path = os.path.join(ctx.conf["OS.SshDir"], "sshd_config")
    data = read_capped(path, MAX_FILE)
    if data is None:
        log.warning("event=no_sshd_config path=%s (no sshd on this image?)", path)
        return {"changed": False, "path": None}
    value = "no" if args["disable_password_authentication"] else "yes"
    options = [("PasswordAuthentication", value), ("ChallengeResponseAuthentication", value),
               ("ClientAliveInterval", str(ctx.conf["OS.SshClientAliveInterval"]))]
    text = data.decode("utf-8", "replace")
    new = set_options(text, options)
    if new == text:
        return {"changed": False, "path": path}
    atomic_write(path, new.encode("utf-8"), os.stat(path).st_mode & 0o7777)
    log.info("event=sshd_config path=%s password_authentication=%s client_alive_interval=%s",
             path, value, options[2][1])
    return {"changed": True, "path": path}


# ---- the user's keys ------------------------------------------------------------------------
KEY_TYPES = frozenset((
    "ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"))
MAX_BLOB = 16 * 1024
# A comment is a label for people; sshd ignores it. Letters, digits, spaces and the
# punctuation of user@host and dates only: nothing a shell or sshd would read as more.
COMMENT_RE = re.compile(r"[A-Za-z0-9 @._+=:,/~%#-]{0,1024}")
KEY_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def public_key_line(text: str) -> str:
    """The key as one line `type base64 [comment]`, or FAILED: no options prefix, no second
    line, a known type, a base64 blob whose first SSH string is that type, a plain comment."""
    line = text.strip(" ")
    if line.endswith("\n"):
        line = line[:-1]
    if not line or any(ord(c) < 0x20 or ord(c) == 0x7f for c in line):
        raise fail("the key is not one line (control characters)")
    parts = line.split(" ", 2)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise fail("the key does not start with a known key type (no options allowed)")
    kind, blob = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) == 3 else ""
    if len(blob) > MAX_BLOB * 4 // 3 + 4:
        raise fail("the key is too long")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise fail("the key's blob is not base64") from None
    if len(raw) < 4:
        raise fail("the key's blob is too short")
    (size,) = struct.unpack(">I", raw[:4])
    if raw[4:4 + size].decode("latin-1") != kind or size != len(kind):
        raise fail("the key's blob is not a %s key" % kind)
    if not COMMENT_RE.fullmatch(comment):
        raise fail("the key's comment holds characters other than letters, digits and "
                   "@._+=:,/~%#-")
    return "%s %s%s" % (kind, blob, " " + comment if comment else "")


def _ssh_target(ctx: Context, username: str, path: str):
    """(HomeFile, file name) for a path the broker allows: `<home>/.ssh/<name>` of the OVF's
    user, as the broker reads the home from the account database."""
    pw = accounts.ovf_account(ctx, username)
    if pw is None:
        raise fail("no account %s" % username)
    home = os.path.normpath(pw.pw_dir)
    if not os.path.isabs(home) or home == "/":
        raise fail("%s has no home folder of its own" % username)
    folder, name = os.path.split(path)
    if folder != os.path.join(home, ".ssh") or not KEY_NAME_RE.fullmatch(name) or \
            name in (".", ".."):
        raise fail("%s is not a file in %s/.ssh" % (path, home))
    return HomeFile(pw.pw_uid, pw.pw_gid, home), name


def _write_whole(hf: HomeFile, dfd: int, name: str, data: bytes, mode: int) -> None:
    fd = hf.open_file(dfd, name, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 0)
        hf.finish(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        hf.finish(fd, mode)
    finally:
        os.close(fd)


def authorized_key(ctx: Context, args: dict) -> dict:
    line = public_key_line(args["key"]) + "\n"
    hf, name = _ssh_target(ctx, args["username"], args["path"])
    dfd = hf.open_dir((".ssh",))
    try:
        fd = hf.open_file(dfd, name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            current = os.read(fd, MAX_FILE + 1)
            if len(current) > MAX_FILE:
                raise fail("%s is larger than %d bytes" % (args["path"], MAX_FILE))
            added = line.encode() not in current.splitlines(keepends=True) and \
                line.strip().encode() not in current.splitlines()
            if added:
                prefix = b"\n" if current and not current.endswith(b"\n") else b""
                os.write(fd, prefix + line.encode())
                os.fsync(fd)
            hf.finish(fd, 0o600)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
    log.info("event=authorized_key user=%s path=%s added=%s", args["username"], args["path"],
             added)
    return {"added": added}


def key_pair(ctx: Context, args: dict) -> dict:
    public = public_key_line(args["public_key"]) + "\n"
    hf, name = _ssh_target(ctx, args["username"], args["path"])
    dfd = hf.open_dir((".ssh",))
    try:
        _write_whole(hf, dfd, name, args["private_key"].encode(), 0o600)
        _write_whole(hf, dfd, name + ".pub", public.encode(), 0o644)
    finally:
        os.close(dfd)
    log.info("event=key_pair user=%s path=%s", args["username"], args["path"])
    return {}


# ---- host keys ------------------------------------------------------------------------------
def thumbprint(pub_path: str):
    if not os.path.isfile(pub_path):
        return None
    code, out = run(["ssh-keygen", "-lf", pub_path], timeout=30, check=False)
    words = out.split()
    if code != 0 or len(words) < 2:
        log.warning("event=host_key_unreadable path=%s", pub_path)
        return None
    return words[1].replace(":", "")[:128]


def host_keys(ctx: Context, args: dict) -> dict:
    ssh_dir = ctx.conf["OS.SshDir"]
    kind = ctx.conf["Provisioning.SshHostKeyPairType"]
    report = "rsa" if kind == "auto" else kind
    regenerate = bool(ctx.conf["Provisioning.RegenerateSshHostKeyPair"])
    seconds = 0.0
    if regenerate:
        # The old keys stay while this waits: sshd reads them for each connection.
        waited = platform.wait_for_first(TRANSPORT_KEY_WAIT, ctx.cancel)
        log.info("event=host_keys_begun waited_for_transport_key=%.3f", waited)
        if not os.path.isdir(ssh_dir):
            os.makedirs(ssh_dir, 0o755)
        for hidden in ("", "."):   # (hidden: a search's leftover, after a crash)
            for path in glob.glob(os.path.join(glob.escape(ssh_dir), hidden + "ssh_host_*key*")):
                os.unlink(path)
        start = time.monotonic()

        def generate(t):
            # Two searches at once where there is a second CPU, each into its own hidden
            # names (sshd reads only ssh_host_<type>_key); the first key made is renamed into
            # place, with its .pub, and the others' files go.
            final = os.path.join(ssh_dir, "ssh_host_%s_key" % t)
            tries = [os.path.join(ssh_dir, ".ssh_host_%s_key.%d.new" % (t, i))
                     for i in range(searches())]

            def search(i):
                return lambda stop: run(
                    ["ssh-keygen", "-q", "-N", "", "-t", t, "-f", tries[i]], timeout=240,
                    cancel=stop, nice=SPARE_NICE if i else HOST_KEY_NICE)
            try:
                won = first_to_finish([search(i) for i in range(len(tries))], ctx.cancel)
                os.rename(tries[won] + ".pub", final + ".pub")
                os.rename(tries[won], final)
            finally:
                for path in tries:
                    for name in (path, path + ".pub"):
                        if os.path.lexists(name):
                            os.unlink(name)
        # The types at once (RSA first, the longest): seconds of CPU each under emulation,
        # on a VM with more than one vCPU. The first failure is raised once all have ended.
        types = HOST_KEY_TYPES if kind == "auto" else (kind,)
        with ThreadPoolExecutor(len(types), thread_name_prefix="host-key") as pool:
            list(pool.map(generate, types))
        seconds = round(time.monotonic() - start, 3)
        log.info("event=host_keys_generated type=%s seconds=%.3f", kind, seconds)
    tp = thumbprint(os.path.join(ssh_dir, "ssh_host_%s_key.pub" % report))
    return {"regenerated": regenerate, "type": report, "thumbprint": tp, "seconds": seconds}


# ---- sshd -----------------------------------------------------------------------------------
def _os_ids():
    data = read_capped("/etc/os-release", 64 * 1024, follow=True) or b""
    ids = set()
    for line in data.decode("utf-8", "replace").splitlines():
        m = re.match(r"(ID|ID_LIKE)=\"?([^\"]*)\"?", line)
        if m:
            ids.update(m.group(2).split())
    return ids


def restart_sshd(ctx: Context, args: dict) -> dict:
    unit = "ssh" if _os_ids() & {"debian", "ubuntu"} else "sshd"
    if os.path.isdir("/run/systemd/system") and which("systemctl"):
        argv = ["systemctl", "--job-mode=ignore-dependencies", "try-reload-or-restart", unit]
    elif os.path.exists("/etc/init.d/%s" % unit) and which("service"):
        argv = ["service", unit, "restart"]
    else:
        log.info("event=sshd_not_restarted reason=no_service_manager_or_unit unit=%s", unit)
        return {"how": "not restarted: no systemd and no /etc/init.d/%s" % unit}
    code, out = run(argv, timeout=50, check=False, cancel=ctx.cancel)
    how = " ".join(argv)
    if code != 0:
        log.warning("event=sshd_restart_failed how=%r exit=%d output=%r", how, code, out[-200:])
        how += " (exit %d)" % code
    return {"how": how[:128]}


VERBS = (
    Privileged(P.SSHD_CONFIG, sshd_config, PROV, once=PROCESS, gate=PROVISIONING, slow=True),
    Privileged(P.AUTHORIZED_KEY, authorized_key, PROV, gate=PROVISIONING, slow=True),
    Privileged(P.KEY_PAIR, key_pair, PROV, gate=PROVISIONING, slow=True),
    Privileged(P.HOST_KEYS, host_keys, PROV, once=PROCESS, gate=PROVISIONING, slow=True),
    Privileged(P.RESTART_SSHD, restart_sshd, PROV, once=PROCESS, gate=PROVISIONING,
               slow=True),
)
