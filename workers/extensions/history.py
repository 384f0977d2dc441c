"""The goal-state history: one folder per processed goal state in the worker's own folder
(`history/<UTC time>__<incarnation>[-<etag>]`), with the redacted documents and the status
blob that followed, capped by count and bytes (oldest removed first)."""

import os
import re
import time
from typing import Dict

from statefiles import write_atomic

SAFE = re.compile(r"[^A-Za-z0-9_.-]")
# The status copy when nothing but the time changed: rewritten this often, not every poll.
STATUS_COPY_PERIOD = 60.0
_TIMESTAMPS = re.compile(rb'"timestampUTC": *"[^"]*"')


def _size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class History:
    def __init__(self, folder: str, max_count: int, max_bytes: int):
        self.folder = folder
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.current = None
        self._status = (None, b"", float("-inf"))   # folder, blob without times, when saved

    def add(self, incarnation: str, etag: str, documents: Dict[str, bytes]) -> str:
        os.makedirs(self.folder, 0o700, exist_ok=True)
        name = "%s__%s%s" % (time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime()),
                             SAFE.sub("_", incarnation or "none")[:40],
                             ("-" + SAFE.sub("_", etag)[:40]) if etag else "")
        path = os.path.join(self.folder, name)
        os.makedirs(path, 0o700, exist_ok=True)
        for file, data in documents.items():
            write_atomic(os.path.join(path, file), data, 0o600)
        self.current = path
        self.trim()
        return path

    def save(self, file: str, data: bytes) -> None:
        """A document of the current goal state (e.g. the last status blob, rewritten every
        poll): a copy to read, not state, so not fsynced (two fsyncs every 6 s otherwise)."""
        if self.current and os.path.isdir(self.current):
            write_atomic(os.path.join(self.current, file), data, 0o600, durable=False)

    def save_status(self, file: str, blob: bytes, now: float) -> None:
        """The status blob that followed the goal state: written when it says something new
        (or the goal state is new), else at most every STATUS_COPY_PERIOD. A file made and
        renamed on every 6 s poll was ~15% of an idle poll's CPU (issue 17)."""
        folder, said, at = self._status
        content = _TIMESTAMPS.sub(b"", blob)
        if folder == self.current and said == content and now - at < STATUS_COPY_PERIOD:
            return
        self.save(file, blob)
        self._status = (self.current, content, now)

    def trim(self) -> None:
        try:
            entries = sorted(e for e in os.listdir(self.folder) if "__" in e)
        except OSError:
            return
        sizes = {e: _size(os.path.join(self.folder, e)) for e in entries}
        total = sum(sizes.values())
        while entries and (len(entries) > self.max_count or total > self.max_bytes):
            oldest = entries.pop(0)
            if os.path.join(self.folder, oldest) == self.current and not entries:
                break
            import shutil   # here: a trim is rare, and shutil need not be resident (issue 17)
            shutil.rmtree(os.path.join(self.folder, oldest), ignore_errors=True)
            total -= sizes[oldest]
