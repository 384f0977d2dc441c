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

Before each later round the worker looks at what it may read itself (the SCSI timeouts in
sysfs, whether the udev rules exist) and asks only when the broker would find something to
do: every round is a broker round trip in each process, which under an idle agent is most
of monitoring's CPU (issue 17). The look only says when; the broker still decides what, from
its own reads. The route is asked for only where the broker may add one: with a
Protocol.Endpoint of another address it never does.
"""

import glob
import logging
import os

from ipc.verbs.boot import NET_RULES
from workers.monitoring.check import Check, on_platform
from workers.platform.endpoint import KNOWN_WIRESERVER_IP

log = logging.getLogger("monitoring")


def _round(verb: str, name: str, describe, needed=lambda conf: True):
    def run(ctx) -> None:
        if not ctx.state.get(name):
            ctx.state[name] = True           # the boot's round was provisioning's
            return
        if not needed(ctx.conf):
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


def _under(conf, relative: str) -> str:
    return os.path.join(conf["OS.SysRoot"] or "/", relative)


def _timeouts_differ(conf) -> bool:
    """A SCSI disk whose timeout is not OS.RootDeviceScsiTimeout, or cannot be read."""
    want = b"%d" % conf["OS.RootDeviceScsiTimeout"]
    pattern = os.path.join(glob.escape(_under(conf, "sys/block")), "sd*", "device", "timeout")
    for path in glob.glob(pattern)[:256]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)   # never a FIFO's wait
            try:
                if os.read(fd, 32).strip() != want:
                    return True
            finally:
                os.close(fd)
        except OSError:
            return True
    return False


def _rules_present(conf) -> bool:
    return any(os.path.lexists(_under(conf, relative)) for relative in NET_RULES)


def _route_allowed(conf) -> bool:
    """Where the broker may add the route (boot.wireserver_route): on a platform, with no
    Protocol.Endpoint or the WireServer's own."""
    endpoint = (conf["Protocol.Endpoint"] or "").split(":")[0]
    return on_platform(conf) and endpoint in ("", KNOWN_WIRESERVER_IP)


def _scsi(r) -> str:
    return "timeout=%s devices=%s" % (r["timeout"], ",".join(r["devices"]) or "-")


def _rules(r) -> str:
    return "moved=%s" % ",".join(r["moved"]) if r["moved"] else ""


def _route(r) -> str:
    return "added reason=%r" % r["reason"] if r["added"] else ""


CHECKS = (
    Check("scsi_timeouts", "OS.RootDeviceScsiTimeoutPeriod",
          lambda conf: conf["OS.RootDeviceScsiTimeout"] is not None and on_platform(conf),
          _round("boot.scsi_timeouts", "scsi_timeouts", _scsi, _timeouts_differ)),
    Check("persistent_net_rules", "OS.RemovePersistentNetRulesPeriod", on_platform,
          _round("boot.persistent_net_rules", "persistent_net_rules", _rules, _rules_present)),
    Check("wireserver_route", "OS.MonitorDhcpClientRestartPeriod", _route_allowed,
          _round("boot.wireserver_route", "wireserver_route", _route)),
)
