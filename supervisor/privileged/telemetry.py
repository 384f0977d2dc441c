"""telemetry.collect (ipc/verbs/telemetry.py): the event files, handed to the monitoring worker.

The folders are the broker's own: `<Lib.Dir>/events` (root 0700), and `events/` under
`<Extension.LogDir>/<Handler>` for each `<Handler>-<Version>` folder in Lib.Dir that the broker
installed (a root-owned folder with its run records; supervisor/privileged/extensions.py). An
extension runs as root and may have put anything there: every folder below Extension.LogDir
is opened with O_NOFOLLOW relative to its parent's descriptor (a symlinked handler or events
folder is skipped), every file with O_NOFOLLOW|O_NONBLOCK and checked to be a regular file by
fstat before a byte is read, and read up to MAX_FILE_BYTES. What is handed over or refused is
removed: a file comes once, and a bad one never comes back. Only names of the expected shape
are touched (`*.tld` for the agent's, `<digits>.json` for an extension's), and a listing
stops at MAX_LISTED names, so a flooded folder costs a bounded amount per call.
"""

import base64
import errno
import logging
import os
import re
import stat
from typing import List, Optional, Tuple

from ipc.verbs import telemetry as T
from supervisor.broker import Context, Privileged
from supervisor.privileged import ensure_root_dir
from supervisor.privileged.extensions import FOLDER_RE, _root_dir, _runs

log = logging.getLogger("broker")

WORKERS = frozenset(("monitoring",))
EXTENSION_FILE = re.compile(r"[0-9]{1,20}\.json")
MAX_LISTED = 4096           # names looked at in one folder per call
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _handlers(conf) -> List[str]:
    """The names of the handlers the broker installed (a name once, however many versions)."""
    lib = conf["Lib.Dir"]
    try:
        entries = os.listdir(lib)
    except OSError:
        return []
    names = set()
    for entry in entries:
        m = FOLDER_RE.fullmatch(entry)
        folder = os.path.join(lib, entry)
        if m and _root_dir(folder) and _runs(folder) is not None:
            names.add(m.group(1))
    return sorted(names)


def _open_below(base: str, parts: Tuple[str, ...]) -> Optional[int]:
    """A descriptor of base/parts..., each part opened O_NOFOLLOW from its parent; None if a
    part is missing, a symlink or not a folder."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    for part in parts:
        try:
            nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nfd
    return fd


def _listed(fd: int, wanted) -> List[str]:
    names = []
    with os.scandir(fd) as it:
        for n, entry in enumerate(it):
            if n >= MAX_LISTED:
                break
            # A folder named like an event file is left alone (never walked, never removed).
            if wanted(entry.name) and not entry.is_dir(follow_symlinks=False):
                names.append(entry.name)
    return sorted(names)


def _read(dfd: int, name: str) -> Tuple[Optional[bytes], Optional[str]]:
    """(bytes, None) or (None, why it is refused)."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dfd)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, ("a symlink" if e.errno == errno.ELOOP else
                      "a FIFO or device" if e.errno == errno.ENXIO else e.strerror or str(e))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_nlink != 1:
            return None, "a file with %d links" % st.st_nlink
        if st.st_size > T.MAX_FILE_BYTES:
            return None, "%d bytes, over the %d-byte cap" % (st.st_size, T.MAX_FILE_BYTES)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(65536, T.MAX_FILE_BYTES + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > T.MAX_FILE_BYTES:
                return None, "grew over the %d-byte cap" % T.MAX_FILE_BYTES
        return b"".join(chunks), None
    finally:
        os.close(fd)


def _folders(conf):
    """(source, handler, descriptor) of each events folder, the agent's first."""
    agent = os.path.join(conf["Lib.Dir"], "events")
    ensure_root_dir(agent, 0o700)
    fd = _open_below(agent, ())
    if fd is not None:
        yield "agent", "", fd, lambda n: n.endswith(".tld")
    for handler in _handlers(conf):
        fd = _open_below(conf["Extension.LogDir"], (handler, "events"))
        if fd is not None:
            yield "extension", handler, fd, EXTENSION_FILE.fullmatch


def collect(ctx: Context, args: dict) -> dict:
    files, refused, budget, more = [], [], T.MAX_CALL_BYTES, False
    for source, handler, dfd, wanted in _folders(ctx.conf):
        try:
            for name in _listed(dfd, wanted):
                if len(files) + len(refused) >= T.MAX_CALL_FILES:
                    more = True
                    break
                try:
                    size = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                if files and size > budget:
                    more = True
                    break
                data, why = _read(dfd, name)
                shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                if why is not None:
                    refused.append({"source": source, "handler": handler, "name": shown,
                                    "why": why[:200]})
                    log.warning("event=telemetry_file_refused source=%s handler=%s file=%r "
                                "why=%r", source, handler, shown, why)
                elif data is not None:
                    files.append({"source": source, "handler": handler, "name": shown,
                                  "data": base64.b64encode(data).decode("ascii")})
                    budget -= len(data)
                try:
                    os.unlink(name, dir_fd=dfd)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.warning("event=telemetry_file_kept source=%s handler=%s file=%r "
                                "why=%r", source, handler, shown, e.strerror or str(e))
        finally:
            os.close(dfd)
        if more:
            break
    return {"files": files, "refused": refused, "more": more}


VERBS = (
    Privileged(T.COLLECT, collect, WORKERS),
)
