"""RDMA set-up after provisioning, as waagent's daemon does it (daemon/main.py, then
common/rdma.py setup_rdma_device): with OS.EnableRDMA=y or OS.CheckRdmaDriver=y, a fresh goal
state (RDMA changes may not bump the incarnation), SharedConfig.xml's first <Instance> read
for rdmaIPv4Address and rdmaMacAddress (the MAC given as 12 hex digits, written with colons),
and the broker asked to set the machine up (boot.rdma: dat.conf, /dev/hvnd_rdma, the
interface's address). Once per boot; never fatal — waagent logs and goes on.

OS.UpdateRdmaDriver is not read: the driver update (distribution packages of the Network
Direct driver) is not done (config/keys.py NOT_APPLIED says so at start).
"""

import logging
import os
import re
from typing import Optional, Tuple

from ipc.errors import IpcError

log = logging.getLogger("provisioning")

VERB = "boot.rdma"


def enabled(conf) -> bool:
    return bool(conf["OS.EnableRDMA"] or conf["OS.CheckRdmaDriver"])


def addresses(shared_config) -> Optional[Tuple[str, str]]:
    """(ipv4, mac with colons) from a parsed SharedConfig, or None (logged, as waagent)."""
    ipv4, mac = shared_config.rdma_ipv4, shared_config.rdma_mac
    if not ipv4:
        log.error("event=rdma_not_set_up reason='no rdmaIPv4Address on the Instance element "
                  "of SharedConfig.xml'")
        return None
    if not mac:
        log.error("event=rdma_not_set_up reason='no rdmaMacAddress on the Instance element "
                  "of SharedConfig.xml'")
        return None
    ipv4, mac = ipv4.strip(), mac.strip()
    if not re.fullmatch(r"[0-9A-Fa-f]{12}", mac):
        log.error("event=rdma_not_set_up reason='rdmaMacAddress %r is not 12 hex digits'",
                  mac[:40])
        return None
    return ipv4[:15], ":".join(mac[i:i + 2] for i in range(0, 12, 2))


def run(worker, conf, prov) -> Optional[dict]:
    """Set up RDMA when waagent.conf asks; the broker's answer, or None."""
    if not enabled(conf):
        log.info("event=rdma skipped: RDMA capabilities are not enabled")
        return None
    try:
        state, _ = worker.call("provisioning.state", {})
        if VERB in state["done"]:
            log.info("event=rdma_already_set_up this boot")
            return None
        client = prov.platform()
        with worker.working():
            full = client.full_goal_state(client.goal_state())
        if full.shared_config is None:
            log.error("event=rdma_not_set_up reason='the goal state has no SharedConfig'")
            return None
        found = addresses(full.shared_config)
        if found is None:
            return None
        ipv4, mac = found
        log.info("event=rdma_found ipv4=%s mac=%s", ipv4, mac)
        worker.tick()
        result, fds = worker.call(VERB, {"ipv4": ipv4, "mac": mac})
        for fd in fds:
            os.close(fd)
        log.info("event=rdma_set_up kind=%s nd_version=%s dat_conf=%s device_written=%s "
                 "interface=%s reason=%r", result["kind"], result["nd_version"],
                 result["dat_conf"], result["device_written"], result["interface"],
                 result["reason"])
        return result
    except IpcError as e:
        log.error("event=rdma_failed reason=%r", e.message[:300])
    except Exception as e:  # noqa: B902 - the platform unreachable, a bad document: logged
        log.error("event=rdma_failed reason=%r", ("%s: %s" % (type(e).__name__, e))[:300])
    return None
