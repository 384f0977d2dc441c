"""The WireServer firewall check (protocol.md §9.4): one round asks the broker to check and
repair the rules (firewall.apply, no argument: the broker decides the address, the group and
the tool). Logs what the broker changed, and the rules in force at start and then every
Debug.FirewallRulesLogPeriod seconds."""

import logging
import time

from workers.monitoring.check import Check

log = logging.getLogger("monitoring.firewall")

VERB = "firewall.apply"


def wanted(conf) -> bool:
    return bool(conf["OS.EnableFirewall"])


def check(ctx) -> None:
    result, _ = ctx.worker.call(VERB, {})
    for what in result["changed"]:
        log.warning("event=firewall_repaired address=%s backend=%s what=%r",
                    result["address"], result["backend"], what)
    memory = ctx.state.setdefault("firewall", {"logged_at": None})
    now = time.monotonic()
    period = float(ctx.conf["Debug.FirewallRulesLogPeriod"])
    if memory["logged_at"] is None or now - memory["logged_at"] >= period:
        memory["logged_at"] = now
        log.info("event=firewall_rules address=%s backend=%s rules=%r", result["address"],
                 result["backend"], "; ".join(result["rules"]))


CHECKS = (Check("firewall", "OS.EnableFirewallPeriod", wanted, check),)
