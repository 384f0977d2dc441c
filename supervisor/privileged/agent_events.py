"""The agent's own telemetry events (protocol.md §1.11): what the broker did that waagent
reports, written as waagent writes them — one JSON file per event,
`<Lib.Dir>/events/<epoch-µs>.tld` (written to a temporary name, then renamed), at most
MAX_FILES kept (the oldest removed first). The monitoring worker sends them
(telemetry.collect, workers/monitoring/telemetry.py), which redacts SAS signatures; what is
written here is still kept short and free of command output.
"""

import json
import logging
import os
import time

from supervisor.privileged import atomic_write, ensure_root_dir

log = logging.getLogger("broker")

PROVIDER = "69B669B9-4AF8-4C50-BDC4-6006FA76E975"   # extension/operation events, id 1
MAX_FILES = 1000
MAX_MESSAGE = 3072


def _folder(conf) -> str:
    path = os.path.join(conf["Lib.Dir"], "events")
    ensure_root_dir(path, 0o700)
    return path


def operation(conf, name: str, version: str, op: str, success: bool, message: str = "",
              duration_ms: int = 0) -> None:
    """An operation event (Name, Version, Operation, OperationSuccess, Message, Duration);
    never raises: telemetry is not worth failing what it reports on."""
    doc = {"eventId": 1, "providerId": PROVIDER, "parameters": [
        {"name": "Name", "value": name}, {"name": "Version", "value": version},
        {"name": "IsInternal", "value": False}, {"name": "Operation", "value": op},
        {"name": "OperationSuccess", "value": bool(success)},
        {"name": "Message", "value": message[:MAX_MESSAGE]},
        {"name": "Duration", "value": max(0, int(duration_ms))},
        {"name": "ExtensionType", "value": ""}]}
    try:
        folder = _folder(conf)
        names = sorted(n for n in os.listdir(folder) if n.endswith(".tld"))
        for old in names[:max(0, len(names) - MAX_FILES + 1)]:
            os.unlink(os.path.join(folder, old))
        path = os.path.join(folder, "%d.tld" % int(time.time() * 1e6))
        atomic_write(path, json.dumps(doc).encode(), 0o600)
    except OSError as e:
        log.warning("event=agent_event_not_written operation=%s error=%r", op, e.strerror or e)
