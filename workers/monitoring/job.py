"""The monitoring worker's job: a table of periodic checks (protocol.md §1.11, §1.13, §9).

Each check is one row (workers/monitoring/check.py), its module's CHECKS: a name, the waagent.conf key that gives its period in
seconds, whether this configuration wants it at all, and the function that does one round.
The loop runs every wanted check once at start and then each on its own period. A round that
raises is logged with the check's name and tried again at its next period: one failing check
never stops the others, and never the worker (a crash loop would restart them all).

Between rounds the worker sleeps until the next one is due, waking only to tick its heartbeat.
"""

import logging
import time
from typing import Callable, Dict, Optional, Sequence

from workers.monitoring.check import Check, Context

log = logging.getLogger("monitoring")


def checks() -> Sequence[Check]:
    """Every check monitoring knows, in the order a round of all of them runs."""
    # The firewall first: the rules are in place before a round sends anything.
    from workers.monitoring import firewall, healthservice, hostname, oschecks, telemetry
    return (firewall.CHECKS + hostname.CHECKS + healthservice.CHECKS + oschecks.CHECKS
            + telemetry.CHECKS)


def run(worker, conf, table: Optional[Sequence[Check]] = None,
        clock: Callable[[], float] = time.monotonic) -> None:
    table = checks() if table is None else table
    ctx = Context(worker, conf)
    wanted = [c for c in table if c.wanted(conf)]
    worker.ready()
    if not wanted:
        worker.status("nothing to monitor in this configuration")
        log.info("event=monitoring_idle reason='no check is enabled in the configuration'")
    else:
        log.info("event=monitoring_checks %s",
                 " ".join(f"{c.name}={conf[c.period_key]}s" for c in wanted))
    due = {c.name: clock() for c in wanted}
    failing: Dict[str, str] = {}   # a check's last error: a repeat is logged at DEBUG
    while True:
        worker.tick()
        now = clock()
        for c in wanted:
            if due[c.name] > now:
                continue
            try:
                c.run(ctx)
                failing.pop(c.name, None)
            except Exception as e:  # noqa: BLE001 — one check's failure is logged, never fatal
                error = str(e)[:500]
                log.log(logging.DEBUG if failing.get(c.name) == error else logging.WARNING,
                        "event=check_failed check=%s error=%r", c.name, error)
                failing[c.name] = error
            due[c.name] = clock() + float(conf[c.period_key])
        # Sleep until the next round, waking once per heartbeat interval to tick (a loop that
        # stops turning stops the heartbeats: that is how a hung round is found and restarted).
        next_due = min(due.values()) if due else clock() + 3600
        worker.wait(max(0.0, min(next_due - clock(), worker.heartbeat_interval)))
