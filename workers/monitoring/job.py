"""The monitoring worker's job: a table of periodic checks (protocol.md §1.11, §1.13, §9).

Each check is one row (workers/monitoring/check.py), its module's CHECKS: a name, the waagent.conf key that gives its period in
seconds, whether this configuration wants it at all, and the function that does one round.
The loop runs every wanted check once at start and then each on its own period. A round that
raises is logged with the check's name and tried again at its next period: one failing check
never stops the others, and never the worker (a crash loop would restart them all).

Between rounds the worker sleeps until the next one is due (its heartbeats go on meanwhile:
workers/base.py `wait`), and keeps no connection open: issue 17's idle CPU.
- Checks of one period stay in one round: the next is due a period after this round began, not
  after each check ended, or each round's time would push them apart until every check woke
  the worker on its own.
- By default rounds are 30 s or more apart (HealthService, the only HTTP of most rounds, 60 s):
  long enough for a server to close an idle connection (the emulator does after 60 s), and the
  next round's requests would then first go on a dead connection, then again on a new one.
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
        ran = False
        for c in wanted:
            if due[c.name] > now:
                continue
            ran = True
            try:
                c.run(ctx)
                failing.pop(c.name, None)
            except Exception as e:  # noqa: BLE001 — one check's failure is logged, never fatal
                error = str(e)[:500]
                log.log(logging.DEBUG if failing.get(c.name) == error else logging.WARNING,
                        "event=check_failed check=%s error=%r", c.name, error)
                failing[c.name] = error
            # A period after the round began (never before this check ended).
            due[c.name] = max(now + float(conf[c.period_key]), clock())
        if ran:
            ctx.close_connections()
        # Sleep until the next round (a round that hangs stops the heartbeats: that is how it
        # is found and restarted).
        next_due = min(due.values()) if due else clock() + 3600
        worker.wait(max(0.0, next_due - clock()))
