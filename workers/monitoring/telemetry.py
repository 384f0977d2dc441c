"""The telemetry check (protocol.md §1.11, §4.13): event files to `comp=telemetrydata`.

One round: take the event files from the broker (telemetry.collect: the agent's `events/*.tld`
and each installed handler's `events/<digits>.json`, removed as they are handed over), parse
them (workers/monitoring/events.py: a malformed file or event is dropped with a log line),
add the common parameters waagent adds, and post them in bodies of at most 64512 bytes, one
provider per body (workers/platform/reports.py). What could not be sent stays queued in the
worker for the next round, up to MAX_QUEUED events (the oldest go first); a round handles at
most MAX_FILES_PER_ROUND files, so a flood of files is worked off over several rounds.
"""

import base64
import datetime
import logging
import os
import platform
import threading
from typing import List

from workers.monitoring import events
from workers.platform.identity import AGENT_VERSION
from workers.platform.reports import TELEMETRY_MAX_BYTES, TelemetryEvent, telemetry_event_xml
from workers.monitoring.check import Check, on_platform

log = logging.getLogger("monitoring")

MAX_FILES_PER_ROUND = 1024      # waagent keeps at most 1000 event files (16 calls of 64)
MAX_QUEUED = 2000
MAX_CALLS_PER_ROUND = 40
# The body around one provider's events: an event larger than what is left is never sent.
BODY_OVERHEAD = len('<?xml version="1.0"?><TelemetryData version="1.0"><Provider '
                    'id="00000000-0000-0000-0000-000000000000"></Provider></TelemetryData>')


def _machine() -> dict:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        ram = 0
    return {"OSVersion": "%s:%s" % (platform.system(), platform.release()),
            "ExecutionMode": "IAAS", "RAM": int(ram), "Processors": os.cpu_count() or 1}


def _with_common(event: TelemetryEvent, goal_state, machine: dict) -> TelemetryEvent:
    """waagent's common parameters, where the event does not carry its own."""
    common = [("GAVersion", AGENT_VERSION),
              ("ContainerId", goal_state.container_id if goal_state else ""),
              ("OpcodeName", datetime.datetime.utcnow().isoformat() + "Z"),
              ("EventTid", threading.get_ident() & 0xFFFFFFFF), ("EventPid", os.getpid()),
              ("TaskName", threading.current_thread().name), ("KeywordName", ""),
              ("OSVersion", machine["OSVersion"]), ("ExecutionMode", machine["ExecutionMode"]),
              ("RAM", machine["RAM"]), ("Processors", machine["Processors"]),
              ("RoleInstanceName", goal_state.role_instance_id if goal_state else "")]
    have = {name for name, _ in event.parameters}
    return TelemetryEvent(event.provider_id, event.event_id,
                          event.parameters + tuple(p for p in common if p[0] not in have))


def collect(worker) -> List[TelemetryEvent]:
    """The events of the files the broker hands over this round (the malformed dropped)."""
    out: List[TelemetryEvent] = []
    per_handler = {}
    over = {}        # handler -> events left out over its cap (one log line each, at the end)
    taken = 0
    for _ in range(MAX_CALLS_PER_ROUND):
        result, _fds = worker.call("telemetry.collect", {})
        for r in result["refused"]:
            log.warning("event=telemetry_file_dropped source=%s handler=%s file=%s why=%r",
                        r["source"], r["handler"] or "-", r["name"], r["why"])
        for f in result["files"]:
            taken += 1
            data = base64.b64decode(f["data"])
            try:
                if f["source"] == "agent":
                    out.append(events.agent_event(data))
                    continue
                if per_handler.get(f["handler"], 0) >= events.ETP_MAX_EVENTS:
                    over[f["handler"]] = over.get(f["handler"], 0) + 1
                    continue     # not even parsed: this extension had its share this round
                got, dropped = events.extension_events(f["handler"], data)
            except events.Malformed as e:
                log.warning("event=telemetry_file_dropped source=%s handler=%s file=%s why=%r",
                            f["source"], f["handler"] or "-", f["name"], str(e))
                continue
            except Exception as e:  # noqa: BLE001 — the file is gone: lose it, not the round
                log.warning("event=telemetry_file_dropped source=%s handler=%s file=%s "
                            "why='unexpected %s'", f["source"], f["handler"] or "-", f["name"],
                            type(e).__name__)
                continue
            for why in dropped:
                log.warning("event=telemetry_event_dropped handler=%s file=%s why=%r",
                            f["handler"], f["name"], why)
            room = events.ETP_MAX_EVENTS - per_handler.get(f["handler"], 0)
            if len(got) > room:
                log.warning("event=telemetry_events_dropped handler=%s file=%s count=%d "
                            "why='over %d events of one extension in a round'",
                            f["handler"], f["name"], len(got) - room, events.ETP_MAX_EVENTS)
            kept = got[:room]
            per_handler[f["handler"]] = per_handler.get(f["handler"], 0) + len(kept)
            out.extend(kept)
        if not result["more"] or taken >= MAX_FILES_PER_ROUND:
            break
    for handler, files in sorted(over.items()):
        log.warning("event=telemetry_files_dropped handler=%s files=%d why='over %d events of "
                    "one extension in a round'", handler, files, events.ETP_MAX_EVENTS)
    return out


def run(ctx) -> None:
    queue: List[TelemetryEvent] = ctx.state.setdefault("telemetry", [])
    goal_state = ctx.client.last_goal_state or ctx.client.goal_state()
    machine = ctx.state.setdefault("telemetry_machine", _machine())
    for event in collect(ctx.worker):
        event = _with_common(event, goal_state, machine)
        size = len(telemetry_event_xml(event).encode("utf-8"))
        if size + BODY_OVERHEAD > TELEMETRY_MAX_BYTES:
            log.warning("event=telemetry_event_dropped provider=%s why='%d bytes, over the "
                        "%d-byte request'", event.provider_id, size, TELEMETRY_MAX_BYTES)
            continue
        queue.append(event)
    if len(queue) > MAX_QUEUED:
        log.warning("event=telemetry_queue_full dropped=%d", len(queue) - MAX_QUEUED)
        del queue[:len(queue) - MAX_QUEUED]
    if not queue:
        return
    pending = list(queue)
    requests = ctx.client.send_telemetry(pending)
    del queue[:len(pending)]
    log.info("event=telemetry_sent events=%d requests=%d", len(pending), requests)


# Only where there is a platform to send to (an endpoint given, or an Azure VM).
CHECKS = (
    Check("telemetry", "Debug.EtpCollectionPeriod", on_platform, run),
)
