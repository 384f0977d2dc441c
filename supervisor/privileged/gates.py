"""Gates and ONCE verbs on disk: what the broker has closed or run, per boot and VM id.

The record is `<Agent.StateDir>/broker/gates.json` (folder root 0700, file 0600, written
atomically): `{"boot_id", "vm_id", "closed": [gates], "done": [verbs]}`. It counts only for
the boot id and VM id it names: a reboot or a new VM id (a captured image) starts afresh.
A verb with once=BOOT is recorded *before* its handler runs, so a crash mid-run fails closed
(custom data never runs twice as root); a gate is recorded closed when its closing verb
succeeds. If the record cannot be written, the verb is not run.

At start the supervisor also closes the provisioning gate from what it reads itself
(state.py load_gates()): the `provisioned` marker of Lib.Dir equal to the VM id (SMBIOS
product_uuid under OS.SysRoot), or `Provisioning.Agent` disabled — then, as protocol.md §3.1 says, it
writes the marker itself (the worker only reports Ready). Nothing a worker says enters here.
"""

import json
import logging
import os
import threading
from typing import Optional, Set

from supervisor.privileged import atomic_write, ensure_root_dir, read_capped

log = logging.getLogger("guestagent.broker")

FILE = "gates.json"
MAX_BYTES = 64 * 1024
BOOT_ID = "proc/sys/kernel/random/boot_id"
PROVISIONING = "provisioning"


def boot_id(conf) -> Optional[str]:
    path = os.path.join(conf["OS.SysRoot"] or "/", BOOT_ID)
    try:
        data = read_capped(path, 128, follow=True)
    except Exception as e:  # noqa: B902 - unreadable: no boot id, logged
        log.warning("event=boot_id_unreadable path=%s error=%r", path, str(e))
        return None
    text = (data or b"").decode("ascii", "replace").strip()
    return text or None


class Gates:
    """The gates closed and the once=BOOT verbs run, for one boot id and VM id."""

    def __init__(self, path: Optional[str], boot: Optional[str], vm_id: Optional[str]):
        self.path, self.boot, self.vm_id = path, boot, vm_id
        self.closed: Set[str] = set()
        self.done: Set[str] = set()
        self.lock = threading.Lock()

    def load(self) -> None:
        if self.path is None:
            return
        try:
            data = read_capped(self.path, MAX_BYTES)
            record = json.loads(data) if data else {}
        except Exception as e:  # noqa: B902 - a damaged record: fail closed for this boot
            log.error("event=gates_unreadable path=%s error=%r: the provisioning gate stays "
                      "closed this boot", self.path, str(e)[:200])
            self.closed.add(PROVISIONING)
            return
        if not isinstance(record, dict) or record.get("boot_id") != self.boot or \
                record.get("vm_id") != self.vm_id:
            return   # another boot or another VM: nothing closed yet
        self.closed.update(str(g) for g in record.get("closed", ()) if isinstance(g, str))
        self.done.update(str(v) for v in record.get("done", ()) if isinstance(v, str))

    def _save(self) -> None:
        if self.path is None:
            return
        ensure_root_dir(os.path.dirname(self.path), 0o700)
        data = json.dumps({"boot_id": self.boot, "vm_id": self.vm_id,
                           "closed": sorted(self.closed), "done": sorted(self.done)})
        atomic_write(self.path, data.encode() + b"\n", 0o600)

    def close(self, gate: str) -> None:
        with self.lock:
            if gate in self.closed:
                return
            self.closed.add(gate)
            try:
                self._save()
            except Exception as e:  # noqa: B902 - closed in memory; on disk at the next save
                log.error("event=gates_unwritable path=%s error=%r", self.path, str(e)[:200])
        log.info("event=gate_closed gate=%s boot_id=%s vm_id=%s", gate, self.boot, self.vm_id)

    def record(self, verb: str) -> bool:
        """Note that verb runs now (before it runs); False if it ran already this boot and VM
        or the record cannot be written (the verb must then not run)."""
        with self.lock:
            if verb in self.done:
                return False
            self.done.add(verb)
            try:
                self._save()
            except Exception as e:  # noqa: B902 - not on disk: do not run it
                log.error("event=gates_unwritable path=%s error=%r", self.path, str(e)[:200])
                return False
        return True


CURRENT: Optional[Gates] = None


def current() -> Gates:
    """The gates loaded at start (a memory-only set when no supervisor loaded them: tests)."""
    global CURRENT
    if CURRENT is None:
        CURRENT = Gates(None, None, None)
    return CURRENT
