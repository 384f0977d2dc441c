"""How every state file is written (DESIGN.md principle 9): a temporary file in the same folder,
fsync, rename over the old one, fsync of the folder. A reader sees the old file or the new one,
never half of either, and a crash loses at most the write under way.

Shared by the supervisor (root: it also sets the owner) and the workers (their own files).
"""

import os
from typing import Optional, Tuple

TEMP_TRIES = 100


def temp_file(folder: str, prefix: str) -> Tuple[int, str]:
    """A new file (0600, opened read-write, close-on-exec) under a random name in folder:
    tempfile.mkstemp's, without tempfile, which imports shutil, bz2 and lzma (~0.6 MiB in every
    resident process, issue 17). O_EXCL and O_NOFOLLOW: never an existing file or a link."""
    for _ in range(TEMP_TRIES):
        path = os.path.join(folder, prefix + os.urandom(8).hex())
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError("no free temporary name in %s" % folder)


def unlinked_file(folder: str) -> int:
    """A descriptor of a new, empty, nameless file in folder (0600, read-write, close-on-exec),
    freed when the last descriptor closes: tempfile.TemporaryFile's, without tempfile (and the
    random module with it: ~0.5 MiB in the idle supervisor, issue 17). O_TMPFILE, or where the
    filesystem lacks it a temp_file unlinked at once."""
    try:
        return os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:   # as tempfile: EISDIR on old kernels, EOPNOTSUPP on some filesystems
        fd, path = temp_file(folder, ".tmp.")
        try:
            os.unlink(path)
        except BaseException:
            os.close(fd)
            raise
        return fd


def write_atomic(path: str, data: bytes, mode: int = 0o600,
                 uid: Optional[int] = None, gid: Optional[int] = None,
                 durable: bool = True) -> None:
    """Replace path with data. The mode (and owner, when given) is set on the temporary file
    before any byte is written, so the content is never readable by anyone it is not for; a
    link at path is replaced, never followed. durable=False skips both fsyncs: for a copy
    kept only to be read (a crash may lose the last one; the rename still keeps it whole)."""
    folder = os.path.dirname(path) or "."
    fd, tmp = temp_file(folder, ".%s." % os.path.basename(path))
    try:
        os.fchmod(fd, mode)
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
