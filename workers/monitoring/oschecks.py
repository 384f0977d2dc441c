"""The periodic OS checks (protocol.md §9.3): SCSI timeouts, persistent net rules, and the
route to the WireServer after a DHCP client restart, each re-applied on its period through the
same broker verb provisioning calls at boot (ipc/verbs/boot.py). The broker decides what each
does from waagent.conf and what it reads itself; these rows only say when.

DHCP client restart (OS.MonitorDhcpClientRestartPeriod): waagent watches the DHCP client's pid
and, when it changed, re-adds the routes DHCP gave — in effect the route to the WireServer.
Here the row asks `boot.wireserver_route` every period instead: the broker reads the routing
table and adds the route only when it is missing, which covers a restarted client (and any
other way the route was lost) without a pid to track. Restarting the DHCP client itself is
not done: waagent does not either, and a broker verb that restarts a system service on a
worker's word is more than the route needs.

Each check's first round is skipped: provisioning applied it moments ago at this boot (the
monitoring worker starts after it), so monitoring starts one period later.
"""

import logging
import os

from workers.monitoring.check import Check, on_platform

log = logging.getLogger("monitoring")


def _round(verb: str, name: str, describe):
    def run(ctx) -> None:
        if not ctx.state.get(name):
            ctx.state[name] = True           # the boot's round was provisioning's
            return
        result, fds = ctx.worker.call(verb, {})
        for fd in fds:
            os.close(fd)
        said = describe(result)
        # Said again only when it changed: the same line every 30 s is noise in the log and
        # an idle agent's CPU (issue 13).
        if said and said != ctx.state.get(name + ".said"):
            log.info("event=os_check check=%s %s", name, said)
        ctx.state[name + ".said"] = said
    return run


def _scsi(r) -> str:
    return "timeout=%s devices=%s" % (r["timeout"], ",".join(r["devices"]) or "-")


def _rules(r) -> str:
    return "moved=%s" % ",".join(r["moved"]) if r["moved"] else ""


def _route(r) -> str:
    return "added reason=%r" % r["reason"] if r["added"] else ""


CHECKS = (
    Check("scsi_timeouts", "OS.RootDeviceScsiTimeoutPeriod",
          lambda conf: conf["OS.RootDeviceScsiTimeout"] is not None and on_platform(conf),
          _round("boot.scsi_timeouts", "scsi_timeouts", _scsi)),
    Check("persistent_net_rules", "OS.RemovePersistentNetRulesPeriod", on_platform,
          _round("boot.persistent_net_rules", "persistent_net_rules", _rules)),
    Check("wireserver_route", "OS.MonitorDhcpClientRestartPeriod", on_platform,
          _round("boot.wireserver_route", "wireserver_route", _route)),
)
