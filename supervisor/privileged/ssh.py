"""SSH (protocol.md §3.4 steps 9, 10, 11, 14, 15): sshd_config, the user's keys, host keys,
sshd restarted the distro's way.

Keys go into the user's home through HomeFile: no symlink followed below the home, no
hard-linked file written, folders 0700 and files owned by the user (authorized_keys 0600 as
azure-init does; a private key 0600 and its .pub 0644 — waagent's swapped modes are a quirk
not kept). A key path outside the user's home is refused.
"""

import glob
import logging
import os
import pwd
import re
import time

from supervisor.broker import Context, handler
from supervisor.privileged import HomeFile, atomic_write, fail, read_capped, run, which

log = logging.getLogger("guestagent.broker.provisioning")

MAX_FILE = 1024 * 1024
HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")   # what `ssh-keygen -A` makes today


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


@handler("provisioning.sshd_config", slow=True)
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
def _home_file(username: str) -> HomeFile:
    try:
        pw = pwd.getpwnam(username)
    except KeyError:
        raise fail("no account %s" % username) from None
    return HomeFile(pw.pw_uid, pw.pw_gid, pw.pw_dir)


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


@handler("provisioning.authorized_key", slow=True)
def authorized_key(ctx: Context, args: dict) -> dict:
    hf = _home_file(args["username"])
    parts = hf.relative(args["path"])
    line = args["key"].strip() + "\n"
    dfd = hf.open_dir(parts[:-1])
    try:
        fd = hf.open_file(dfd, parts[-1], os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
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


@handler("provisioning.key_pair", slow=True)
def key_pair(ctx: Context, args: dict) -> dict:
    hf = _home_file(args["username"])
    parts = hf.relative(args["path"])
    dfd = hf.open_dir(parts[:-1])
    try:
        _write_whole(hf, dfd, parts[-1], args["private_key"].encode(), 0o600)
        _write_whole(hf, dfd, parts[-1] + ".pub", (args["public_key"].strip() + "\n").encode(),
                     0o644)
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


@handler("provisioning.host_keys", slow=True)
def host_keys(ctx: Context, args: dict) -> dict:
    ssh_dir = ctx.conf["OS.SshDir"]
    kind = ctx.conf["Provisioning.SshHostKeyPairType"]
    report = "rsa" if kind == "auto" else kind
    regenerate = bool(ctx.conf["Provisioning.RegenerateSshHostKeyPair"])
    seconds = 0.0
    if regenerate:
        if not os.path.isdir(ssh_dir):
            os.makedirs(ssh_dir, 0o755)
        for path in glob.glob(os.path.join(glob.escape(ssh_dir), "ssh_host_*key*")):
            os.unlink(path)
        start = time.monotonic()
        for t in (HOST_KEY_TYPES if kind == "auto" else (kind,)):
            key = os.path.join(ssh_dir, "ssh_host_%s_key" % t)
            run(["ssh-keygen", "-q", "-N", "", "-t", t, "-f", key], timeout=240,
                cancel=ctx.cancel)
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


@handler("provisioning.restart_sshd", slow=True)
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
