"""The hostname monitor (Provisioning.MonitorHostName, protocol.md §9.3): every
Provisioning.MonitorHostNamePeriod the worker reads the kernel's hostname; when it is not the
last one seen, it asks the broker to publish it (`boot.publish_hostname`, the DHCP request
carrying it that provisioning sends, no interface bounce). The worker's reading only says
when to ask: the broker reads the hostname itself and publishes only a name that is not the
one it published last (its own record, Lib.Dir/published_hostname).
"""

import logging
import os
import socket

from workers.monitoring.check import Check, on_platform

log = logging.getLogger("monitoring")


def run(ctx) -> None:
    name = socket.gethostname()
    last = ctx.state.get("hostname")
    if last is not None and name == last:
        return
    result, fds = ctx.worker.call("boot.publish_hostname", {})
    for fd in fds:
        os.close(fd)
    # Remembered once the broker answered: a failed call is asked again next period.
    ctx.state["hostname"] = name
    if result["published"]:
        log.info("event=hostname_published hostname=%s interface=%s acked=%s was=%s",
                 result["hostname"], result["interface"], result["acked"], last)
    elif last is not None:
        log.info("event=hostname_changed hostname=%s published=no reason='the broker "
                 "published it already'", result["hostname"])


CHECKS = (
    Check("hostname", "Provisioning.MonitorHostNamePeriod",
          lambda conf: bool(conf["Provisioning.MonitorHostName"]) and on_platform(conf), run),
)
