"""Run the broker's resource-disk handler in this process, which the test starts under
`unshare --mount --propagation private` so its mounts are its own and end with it.

    python -m tests.integration.resource_disk.in_namespace CONF ACTIONS_JSON

Actions (a JSON list, each a list): ["activate"], ["watched_activate", "/dev/loopN"] (activate,
and how often the disk node was closed after being open for writing: udev watches for that
and re-reads the table, taking the partition nodes away for a moment), ["swap"] (enable_swap); swapon(2) and
swapoff(2) are recorded, never called (swap is the whole host kernel's); ["mounts"], ["readme"],
["sh", "command"]. Prints one JSON list of outcomes."""

import json
import os
import subprocess
import sys
import threading

import config
from ipc.errors import IpcError
from supervisor.broker import Context
from supervisor.privileged import resource_disk as rd


SWAP_CALLS = []


def recorded(name, fd):
    """In place of swapon(2)/swapoff(2): swap is the whole host kernel's, never the test's."""
    SWAP_CALLS.append(name)


def close_writes(device, fn):
    """fn(), and the IN_CLOSE_WRITE events on device meanwhile (inotify, as udev watches)."""
    import ctypes
    import select
    libc = ctypes.CDLL(None, use_errno=True)
    ifd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert ifd >= 0 and libc.inotify_add_watch(ifd, device.encode(), 0x8) >= 0   # IN_CLOSE_WRITE
    try:
        result = fn()
        n = 0
        while select.select([ifd], [], [], 0.2)[0]:
            n += len(os.read(ifd, 4096)) // 16   # struct inotify_event, no name for a file watch
        return result, n
    finally:
        os.close(ifd)


def main(conf_path, actions):
    rd.swap_call = recorded
    conf = config.load(conf_path)
    ctx = Context(worker="provisioning", conf=conf, cancel=threading.Event())
    mp = conf["ResourceDisk.MountPoint"]
    out = []
    for action in actions:
        verb = action[0]
        if verb == "activate":
            try:
                del SWAP_CALLS[:]
                out.append({"ok": True, "result": rd.activate(ctx, {}),
                            "swap_calls": list(SWAP_CALLS)})
            except IpcError as e:
                out.append({"ok": False, "error": e.message})
        elif verb == "watched_activate":
            def activate():
                try:
                    return {"ok": True, "result": rd.activate(ctx, {})}
                except IpcError as e:
                    return {"ok": False, "error": e.message}
            r, n = close_writes(action[1], activate)
            r["close_writes"] = n
            out.append(r)
        elif verb == "swap":
            calls = []
            try:
                how = rd.enable_swap(ctx, mp, conf["ResourceDisk.SwapSizeMB"],
                                     conf["ResourceDisk.Filesystem"],
                                     call=lambda name, fd: calls.append(name))
            except Exception as e:  # noqa: B902 - the verdict goes to the test
                how = "error: %s" % (getattr(e, "message", None) or e)
            path = os.path.join(mp, rd.SWAPFILE)
            st = os.lstat(path) if os.path.lexists(path) else None
            sig = None
            if st is not None and not os.path.islink(path):
                with open(path, "rb") as f:
                    f.seek(os.sysconf("SC_PAGE_SIZE") - 10)
                    sig = f.read(10).decode("ascii", "replace")
            out.append({"how": how, "calls": calls, "signature": sig,
                        "stat": None if st is None else {
                            "mode": st.st_mode & 0o7777, "size": st.st_size,
                            "allocated": st.st_blocks * 512, "ino": st.st_ino,
                            "uid": st.st_uid, "link": os.path.islink(path)}})
        elif verb == "mounts":
            with open("/proc/self/mounts") as f:
                out.append([line.split()[:4] for line in f if line.split()[1] == mp])
        elif verb == "readme":
            try:
                with open(os.path.join(mp, rd.README)) as f:
                    out.append(f.read())
            except OSError as e:
                out.append("error: %s" % e.strerror)
        elif verb == "sh":
            p = subprocess.run(action[1], shell=True, capture_output=True, text=True)
            out.append({"rc": p.returncode, "out": p.stdout + p.stderr})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
