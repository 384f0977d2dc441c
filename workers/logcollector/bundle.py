"""The bundle: a zip streamed to disk, one entry at a time, with waagent's caps.

- A file over PER_FILE (30 MiB) keeps its last 30 MiB (from the first line boundary), archived
  as `truncated_<path with / as _>` as waagent names it; the total of what is archived stays
  under TOTAL (150 MiB, uncompressed), first come first kept (the caller's order).
- Every text line goes through the agent's one redaction filter (redaction.LineRedactor:
  passwords, protectedSettings, SAS signatures, private keys); a line is read at most
  CHUNK + MAX_LINE bytes at a time (a block of whole lines; a longer line is cut there),
  so no input holds more than that in memory; a block without any of the filter's clues
  (redaction.may_hold_secret, a substring scan) is copied as it is. A zip (the goal-state
  history) is opened and each member of it redacted the same way; any other binary file is
  left out — what cannot be redacted does not leave the VM.
- Read pages are dropped from the page cache as we go (posix_fadvise DONTNEED), and the
  bundle's own pages once written, so the slice's memory holds neither.
- The file is created 0600 (O_EXCL) as `<name>.tmp` and renamed when closed; `results.txt`,
  last in the zip, says what was collected, what was left out and why, and whether the
  bundle is partial (the zip's comment says it too).
"""

import io
import os
import time
import zipfile
import zlib
from typing import Callable, List, Optional, Tuple

from redaction import LineRedactor, may_hold_secret

MiB = 1024 * 1024
PER_FILE = 30 * MiB
TOTAL = 150 * MiB
CHUNK = 64 * 1024
MAX_LINE = 64 * 1024
SNIFF = 8192
MAX_ZIP_MEMBERS = 1000


def _drop_cache(fd: int, offset: int = 0, length: int = 0) -> None:
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):
        pass


class Stopped(Exception):
    """The memory watch asked the collection to end (the bundle is closed partial)."""


class Bundle:
    def __init__(self, path: str, should_stop: Callable[[], Optional[str]],
                 per_file: int = PER_FILE, total: int = TOTAL,
                 sync: Callable[[int], None] = os.fdatasync):
        self.path = path
        self.sync = sync     # the job's: a disk that takes seconds must not stop heartbeats
        self.tmp = path + ".tmp"
        self.should_stop = should_stop
        self.per_file, self.total = per_file, total
        self.used = 0
        self.collected: List[Tuple[str, int, str]] = []    # (name, bytes, note)
        self.left_out: List[Tuple[str, str]] = []           # (name, why)
        self.partial: Optional[str] = None
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.out = os.fdopen(fd, "w+b")
        self.zip = zipfile.ZipFile(self.out, "w", zipfile.ZIP_DEFLATED, compresslevel=6)
        self._since_flush = 0

    # -- adding ---------------------------------------------------------------------------
    def room(self) -> int:
        return self.total - self.used

    def skip(self, name: str, why: str) -> None:
        self.left_out.append((name, why))

    def add_fd(self, name: str, fd: int, size: int) -> None:
        """Archive what fd holds (it is closed here), within the caps."""
        try:
            self._add_fd(name, fd, size)
        finally:
            _drop_cache(fd)
            os.close(fd)

    def _add_fd(self, name: str, fd: int, size: int) -> None:
        if self.room() <= 0:
            self.skip(name, "the bundle reached its %d MiB total" % (self.total // MiB))
            return
        head = os.pread(fd, SNIFF, 0)
        if b"\0" in head:
            if head.startswith(b"PK\x03\x04") and name.endswith(".zip"):
                self._add_zip(name, fd, size)
            else:
                self.skip(name, "a binary file (cannot be redacted)")
            return
        start, note, arcname = 0, "", name
        if size > self.per_file:
            start = size - self.per_file
            note = "truncated to its last %d MiB (was %d bytes)" % (self.per_file // MiB, size)
            arcname = "truncated_" + name.replace("/", "_")
        if size - start > self.room():
            self.skip(name, "%d bytes do not fit the %d MiB total (%d bytes left)"
                      % (size - start, self.total // MiB, self.room()))
            return
        src = io.FileIO(fd, "rb", closefd=False)
        src.seek(start)
        reader = io.BufferedReader(src, CHUNK)
        if start:
            reader.readline(MAX_LINE)   # from the first whole line
        written = self._write_lines(arcname, reader, size - start)
        self.collected.append((arcname, written, note))

    def _add_zip(self, name: str, fd: int, size: int) -> None:
        """A zip of text documents (goal-state history): each member redacted, as
        `<name>/<member>`; binary members left out."""
        if size > self.room() or size > self.per_file:
            self.skip(name, "%d bytes do not fit the caps" % size)
            return
        src = io.FileIO(fd, "rb", closefd=False)
        try:
            inner = zipfile.ZipFile(src)
            members = inner.infolist()[:MAX_ZIP_MEMBERS]
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            self.skip(name, "an unreadable zip (%s)" % str(e)[:80])
            return
        for info in members:
            if info.is_dir():
                continue
            member = "%s/%s" % (name, info.filename.lstrip("/").replace("..", "_"))
            if info.file_size > self.room():
                self.skip(member, "does not fit the total")
                continue
            try:
                with inner.open(info) as m:
                    reader = io.BufferedReader(m, CHUNK)
                    if b"\0" in reader.peek(SNIFF)[:SNIFF]:
                        self.skip(member, "a binary file (cannot be redacted)")
                        continue
                    written = self._write_lines(member, reader, info.file_size)
                self.collected.append((member, written, ""))
            except (zipfile.BadZipFile, OSError, ValueError, zlib.error) as e:
                self.skip(member, "unreadable (%s)" % str(e)[:80])
        inner.close()

    def _write_lines(self, arcname: str, reader, limit: int) -> int:
        """Copy at most `limit` bytes through the redactor, a block of whole lines at a time;
        returns the bytes read."""
        redactor = LineRedactor()
        info = zipfile.ZipInfo(arcname, time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16
        done = 0
        pending, held = [], 0     # lines written to the zip CHUNK at a time (fewer calls)
        with self.zip.open(info, "w", force_zip64=True) as dst:
            while done < limit:
                if self.should_stop():
                    self.partial = self.should_stop()
                    pending.append(b"\n[guestagent: collection stopped here: partial]\n")
                    dst.write(b"".join(pending))
                    self.used += done
                    self.collected.append((arcname, done, "cut short: the bundle is partial"))
                    raise Stopped(self.partial)
                # A block to the next line end; one with nothing for the filter (the
                # common case, found by a substring scan) goes as it is.
                block = reader.read(min(CHUNK, limit - done))
                if not block:
                    break
                if not block.endswith(b"\n") and done + len(block) < limit:
                    block += reader.readline(min(MAX_LINE, limit - done - len(block)))
                done += len(block)
                if redactor.state is None and not may_hold_secret(block):
                    pending.append(block)
                else:
                    for line in block.splitlines(keepends=True):
                        text = line.decode("utf-8", "surrogateescape")
                        pending.append(redactor.line(text).encode("utf-8", "surrogateescape"))
                held += len(block)
                if held >= CHUNK:
                    dst.write(b"".join(pending))
                    pending, held = [], 0
                self._since_flush += len(block)
                if self._since_flush >= 4 * MiB:
                    self._flush()
            dst.write(b"".join(pending))
        self.used += done
        return done

    def _flush(self) -> None:
        """Written pages to disk and out of the page cache (the slice's memory)."""
        self._since_flush = 0
        self.out.flush()
        self.sync(self.out.fileno())
        _drop_cache(self.out.fileno())

    def add_text(self, name: str, text: str) -> None:
        self.zip.writestr(name, text.encode("utf-8", "replace"), zipfile.ZIP_DEFLATED)

    # -- ending -------------------------------------------------------------------------
    def results(self) -> str:
        lines = ["guestagent log collection, %s" % time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime())]
        lines.append("PARTIAL: %s" % self.partial if self.partial else "complete")
        lines.append("collected %d files, %d bytes before compression (cap %d MiB a file, "
                     "%d MiB in all)" % (len(self.collected), self.used, self.per_file // MiB,
                                         self.total // MiB))
        for name, size, note in self.collected:
            lines.append("  + %s (%d bytes)%s" % (name, size, ": " + note if note else ""))
        lines.append("left out %d:" % len(self.left_out))
        for name, why in self.left_out:
            lines.append("  - %s: %s" % (name, why))
        return "\n".join(lines) + "\n"

    def close(self) -> int:
        """Write results.txt, close, rename into place; the bundle's size."""
        if self.partial:
            self.zip.comment = ("PARTIAL: " + self.partial).encode("utf-8", "replace")[:1000]
        self.add_text("results.txt", self.results())
        self.zip.close()
        self.out.flush()
        self.sync(self.out.fileno())
        _drop_cache(self.out.fileno())
        self.out.close()
        os.rename(self.tmp, self.path)
        return os.stat(self.path).st_size

    def abandon(self) -> None:
        try:
            self.zip.close()
        except Exception:  # noqa: B902 - already failing: the temporary file goes anyway
            pass
        self.out.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
