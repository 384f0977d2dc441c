"""CustomData (protocol.md §3.4 step 12): saved as Lib.Dir/CustomData, base64-decoded when
Provisioning.DecodeCustomData or ExecuteCustomData is y, and run as root when
ExecuteCustomData is y.

A reviewed exception (DESIGN.md principle 2): root runs platform-supplied code. It runs only
bytes the broker read itself from the DVD (dvd.held_ovf): the worker says which text it parsed
as CustomData and the broker checks that exactly that text is the content of a CustomData
element of those bytes (a byte comparison, no parsing). The file is written by the broker in
its own 0700 folder and run from there; its output is not logged (it may hold secrets), only
its size and exit code.

Once per boot and VM id, recorded on disk before it runs (once=BOOT, gates.py): a crash of
the worker or the supervisor mid-run does not run it again. It runs at most
Provisioning.CustomDataTimeout seconds (900 by default) and stops when the supervisor stops,
printing or silent: then its whole process group is killed and the exit code is -9.
"""

import base64
import binascii
import errno
import logging
import os
import re
import subprocess
import time

from ipc.verbs import provisioning as P
from supervisor.broker import BOOT, PROV, PROVISIONING, Context, Privileged
from supervisor.privileged import SAFE_PATH, atomic_write, dvd, fail, lib_dir, supervise

log = logging.getLogger("guestagent.broker.provisioning")

FILE = "CustomData"
TIMEOUT = 900.0
B64_RE = re.compile(rb"[A-Za-z0-9+/=\s]+")


def _in_held(text: bytes, held: bytes) -> bool:
    for m in re.finditer(rb"<(?:[A-Za-z_][\w.-]*:)?CustomData\s*>", held):
        rest = held[m.end():]
        body = rest.split(b"<", 1)[0]
        if body.strip() == text.strip():
            return True
    return False


def custom_data(ctx: Context, args: dict) -> dict:
    text = args["custom_data"].encode("utf-8")
    held = dvd.held_ovf()
    if held is None:
        raise fail("no ovf-env.xml was read from the DVD by this supervisor")
    if not _in_held(text, held):
        raise fail("that is not the CustomData of the ovf-env.xml read from the DVD")
    execute = bool(ctx.conf["Provisioning.ExecuteCustomData"])
    decode = execute or bool(ctx.conf["Provisioning.DecodeCustomData"])
    data = text.strip()
    if decode:
        if not B64_RE.fullmatch(data):
            raise fail("CustomData is not base64")
        try:
            data = base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise fail("CustomData is not base64") from None
    path = os.path.join(lib_dir(ctx.conf), FILE)
    atomic_write(path, data, 0o700 if execute else 0o600)
    result = {"decoded": decode, "executed": False, "exit_code": None, "seconds": 0.0}
    if not execute:
        log.info("event=custom_data_saved bytes=%d decoded=%s", len(data), decode)
        return result
    start = time.monotonic()
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
    argv = [path]
    try:
        proc = subprocess.Popen(argv, cwd=os.path.dirname(path), env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, close_fds=True, start_new_session=True)
    except OSError as e:
        if e.errno != errno.ENOEXEC:
            raise fail("CustomData could not start: %s" % e.strerror) from None
        # No #! line: run it with the shell, as waagent's shell=True does.
        proc = subprocess.Popen(["/bin/sh", path], cwd=os.path.dirname(path), env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, close_fds=True, start_new_session=True)
    timeout = float(ctx.conf["Provisioning.CustomDataTimeout"])
    code, _, size, why = supervise(proc, timeout, ctx.cancel, keep=0)
    if why is not None:
        log.warning("event=custom_data_killed reason=%s after=%.0fs", why, timeout)
        code = -9 if code is None else code
    seconds = round(time.monotonic() - start, 3)
    log.info("event=custom_data_executed exit_code=%d output_bytes=%d seconds=%.3f",
             code, size, seconds)
    result.update(executed=True, exit_code=max(-255, min(255, code)),
                  seconds=seconds)
    return result


VERBS = (
    Privileged(P.CUSTOM_DATA, custom_data, PROV, once=BOOT, gate=PROVISIONING, slow=True),
)
