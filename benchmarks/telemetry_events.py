"""Telemetry (issue 14): the worker's cost per event file — parse (workers/monitoring/events.py,
SAS redaction included), add the common parameters and build the comp=telemetrydata bodies
(workers/platform/reports.py) — for a round of 1000 agent files (WALinuxAgent's
event_with_callstack.waagent.tld, 2.2 KB) and of 1000 extension files (its well-formed ETP
file, 8 events each: 360 kept per extension and round, the rest not parsed). No broker, no network: what a round costs the
monitoring worker's CPU.

    /opt/guestagent/bin/python benchmarks/telemetry_events.py [--rounds 5]
"""

import argparse
import base64
import logging
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from workers.monitoring import telemetry  # noqa: E402
from workers.platform import reports  # noqa: E402

EVENTS = os.path.join(ROOT, "tests", "data", "walinuxagent", "events")


class Files:
    def __init__(self, source, handler, data, count):
        self.file = {"source": source, "handler": handler, "name": "1.tld",
                     "data": base64.b64encode(data).decode()}
        self.left = count

    def call(self, verb, args):
        n = min(64, self.left)
        self.left -= n
        return {"files": [self.file] * n, "refused": [], "more": self.left > 0}, []


def one(source, handler, path):
    with open(path, "rb") as f:
        data = f.read()
    started = time.perf_counter()
    got = telemetry.collect(Files(source, handler, data, 1000))
    machine = telemetry._machine()
    full = [telemetry._with_common(e, None, machine) for e in got]
    bodies = reports.telemetry_bodies(full)
    return time.perf_counter() - started, len(got), len(bodies), sum(map(len, bodies))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    logging.disable(logging.WARNING)   # the drop lines of the capped extension case
    cases = [("agent", "", os.path.join(EVENTS, "event_with_callstack.waagent.tld")),
             ("extension", "Contoso.H", os.path.join(EVENTS, "extension_events",
                                                     "well_formed_files", "1591905451.json"))]
    for source, handler, path in cases:
        times = []
        for _ in range(a.rounds):
            seconds, events, bodies, size = one(source, handler, path)
            times.append(seconds)
        times.sort()
        print("%-9s 1000 files -> %d events, %d bodies (%d bytes): median %.1f ms, "
              "min %.1f ms" % (source, events, bodies, size, 1000 * times[len(times) // 2],
                               1000 * times[0]))


if __name__ == "__main__":
    main()
