"""The VM owner's account (protocol.md §3.4 steps 7, 8, 13): useradd, the password from a hash
on chpasswd's stdin, the sudoers drop-in, root's password locked.

The real shadow-utils commands do the work (they lock /etc/passwd and /etc/shadow as every
other tool expects).

Which account: only the UserName of the ovf-env.xml the broker read itself
(dvd.ovf_user()), whatever the worker names; with no such read, every account verb is
refused. Root (uid 0) and the agent's own accounts are refused always; any other system
account (uid below UID_MIN of /etc/login.defs, 1000 if unset) unless the image's
waagent.conf says Provisioning.AllowResetSysUser=y (waagent's key, root's decision). The
platform must not be able to take over root, daemon or an agent's own user through the OVF,
nor a compromised worker any account at all.
"""

import grp
import logging
import os
import pwd
import re

from ipc.verbs import provisioning as P
from supervisor.broker import PROCESS, PROV, PROVISIONING, Context, Privileged
from supervisor.privileged import atomic_write, dvd, fail, read_capped, run

log = logging.getLogger("guestagent.broker.provisioning")

LOGIN_DEFS = "/etc/login.defs"
DEFAULT_UID_MIN = 1000
SUDOERS = "/etc/sudoers"
SUDOERS_FILE = "waagent"


def uid_min() -> int:
    try:
        data = read_capped(LOGIN_DEFS, 256 * 1024, follow=True) or b""
    except Exception:  # noqa: B902 - unreadable: the default
        return DEFAULT_UID_MIN
    for line in data.decode("utf-8", "replace").splitlines():
        m = re.match(r"\s*UID_MIN\s+(\d+)\s*$", line)
        if m:
            return int(m.group(1))
    return DEFAULT_UID_MIN


def _check_not_system(ctx: Context, pw) -> None:
    if pw.pw_uid == 0:
        raise fail("%s is uid 0: never provisioned" % pw.pw_name)
    if pw.pw_uid < uid_min() and not ctx.conf["Provisioning.AllowResetSysUser"]:
        raise fail("%s is a system account (uid %d); set Provisioning.AllowResetSysUser=y to "
                   "provision it" % (pw.pw_name, pw.pw_uid))


def ovf_account(ctx: Context, username: str):
    """The account the verb may touch: the OVF's user, not root, not the agent's own, not a
    system account; its passwd entry, or None if it does not exist yet."""
    expected = dvd.ovf_user()
    if expected is None:
        raise fail("no ovf-env.xml naming a user was read by this supervisor: account verbs "
                   "are refused")
    if username != expected:
        raise fail("%s is not the user of the ovf-env.xml the broker read" % username)
    if username == "root" or username.startswith("guestagent"):
        raise fail("%s is never provisioned" % username)
    pw = _lookup(username)
    if pw is not None:
        _check_not_system(ctx, pw)
    return pw


def _lookup(username: str):
    try:
        return pwd.getpwnam(username)
    except KeyError:
        return None


def _wanted_groups(conf):
    names = [g.strip() for g in (conf["Provisioning.UserGroups"] or "").split(",") if g.strip()]
    present = []
    for name in names:
        try:
            grp.getgrnam(name)
            present.append(name)
        except KeyError:
            log.warning("event=group_missing group=%s", name)
    return present


def user(ctx: Context, args: dict) -> dict:
    username = args["username"]
    pw = ovf_account(ctx, username)
    created = False
    if pw is None:
        home = os.path.join(ctx.conf["OS.HomeDir"], username)
        run(["useradd", "-m", "-d", home, "-s", "/bin/bash" if os.path.exists("/bin/bash")
             else "/bin/sh", username], timeout=60, cancel=ctx.cancel)
        pw = _lookup(username)
        if pw is None:
            raise fail("useradd succeeded but %s does not exist" % username)
        created = True
        log.info("event=user_created user=%s uid=%d", username, pw.pw_uid)
    else:
        log.info("event=user_exists user=%s uid=%d", username, pw.pw_uid)
    groups = _wanted_groups(ctx.conf)
    if groups:
        run(["usermod", "-a", "-G", ",".join(groups), username], timeout=60, cancel=ctx.cancel)
    member_of = sorted({g.gr_name for g in grp.getgrall() if username in g.gr_mem} |
                       {grp.getgrgid(pw.pw_gid).gr_name})
    return {"created": created, "uid": pw.pw_uid, "home": pw.pw_dir, "groups": member_of[:64]}


def password(ctx: Context, args: dict) -> dict:
    username = args["username"]
    if ovf_account(ctx, username) is None:
        raise fail("no account %s" % username)
    # The hash goes on stdin only: argv is readable by every process in /proc.
    run(["chpasswd", "-e"], stdin=("%s:%s\n" % (username, args["hash"])).encode(), timeout=60,
        cancel=ctx.cancel)
    log.info("event=password_set user=%s", username)
    return {}


def sudoers(ctx: Context, args: dict) -> dict:
    if ovf_account(ctx, args["username"]) is None:
        raise fail("no account %s" % args["username"])
    folder = ctx.conf["OS.SudoersDir"]
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o750, exist_ok=True)
        current = read_capped(SUDOERS, 1024 * 1024) or b""
        include = ("#includedir %s\n" % folder).encode()
        if include not in current:
            sep = b"" if not current or current.endswith(b"\n") else b"\n"
            st_mode = os.stat(SUDOERS).st_mode & 0o7777 if os.path.exists(SUDOERS) else 0o440
            atomic_write(SUDOERS, current + sep + include, st_mode)
    path = os.path.join(folder, SUDOERS_FILE)
    line = "%s ALL=(ALL) %sALL\n" % (args["username"], "NOPASSWD: " if args["nopasswd"] else "")
    current = read_capped(path, 1024 * 1024) or b""
    lines = current.decode("utf-8", "replace").splitlines(keepends=True)
    if line not in lines:
        if current and not current.endswith(b"\n"):
            current += b"\n"
        current += line.encode()
    atomic_write(path, current, 0o440)
    log.info("event=sudoers user=%s no_pw_prompt=%s path=%s", args["username"],
             args["nopasswd"], path)
    return {"path": path}


def lock_root_password(ctx: Context, args: dict) -> dict:
    if not ctx.conf["Provisioning.DeleteRootPassword"]:
        raise fail("Provisioning.DeleteRootPassword is n")
    run(["usermod", "-p", "*LOCK*", "root"], timeout=60, cancel=ctx.cancel)
    log.info("event=root_password_locked")
    return {}


VERBS = (
    Privileged(P.USER, user, PROV, once=PROCESS, gate=PROVISIONING, slow=True),
    Privileged(P.PASSWORD, password, PROV, once=PROCESS, gate=PROVISIONING, slow=True),
    Privileged(P.SUDOERS, sudoers, PROV, once=PROCESS, gate=PROVISIONING, slow=True),
    Privileged(P.LOCK_ROOT, lock_root_password, PROV, once=PROCESS, gate=PROVISIONING,
               slow=True),
)
