"""The per-boot kernel and network steps (issue 12), asked of the broker one verb each
(ipc/verbs/boot.py), in waagent's order: SCVMM first (§9.1), then entropy before any SSH host
key is made, virtual NUMA, SCSI timeouts, persistent net rules, the route to the WireServer.

Each step is timed and none is fatal: a failure is logged with its step and provisioning goes
on (waagent logs these and carries on too). One `event=boot_steps` line gives each step's
seconds (benchmarks/boot_steps.py measures the same handlers on the host).
"""

import logging
import os
import time
from typing import List, Optional, Tuple

from ipc.errors import IpcError

log = logging.getLogger("provisioning")

SCVMM_VERB = "boot.scvmm"
STEPS = ("boot.entropy", "boot.numa", "boot.scsi_timeouts", "boot.persistent_net_rules",
         "boot.wireserver_route")


def _call(worker, verb: str, timings: List[Tuple[str, float]]) -> Optional[dict]:
    start = time.monotonic()
    try:
        worker.tick()
        result, fds = worker.call(verb, {})
        for fd in fds:
            os.close(fd)
        return result
    except IpcError as e:
        log.warning("event=boot_step_failed step=%s reason=%r", verb.split(".", 1)[1],
                    e.message[:300])
        return None
    finally:
        timings.append((verb.split(".", 1)[1], time.monotonic() - start))


def run(worker, conf) -> Optional[str]:
    """The per-boot steps; returns why provisioning must not go on (SCVMM provisions this
    VM), or None."""
    from workers.provisioning import identity
    if not conf["Protocol.Endpoint"] and not identity.on_azure(conf["OS.SysRoot"]):
        log.info("event=boot_steps skipped: not an Azure VM")
        return None
    timings: List[Tuple[str, float]] = []
    if conf["DetectScvmmEnv"]:
        state, _ = worker.call("provisioning.state", {})
        if SCVMM_VERB in state["done"]:
            log.info("event=scvmm_already_ran this boot")
        else:
            r = _call(worker, SCVMM_VERB, timings)
            if r and r["found"]:
                log.warning("event=scvmm installer_exit=%s: System Center VMM provisions this "
                            "VM", r["exit_code"])
                outcome = "SCVMM provisions this VM"
                log.info("event=provisioning_done outcome=%r", outcome)
                try:
                    worker.status("provisioning: %s" % outcome)
                except IpcError:
                    pass
                return outcome
    for verb in STEPS:
        _call(worker, verb, timings)
    log.info("event=boot_steps total=%.3f %s", sum(t for _, t in timings),
             " ".join("%s=%.3f" % step for step in timings))
    return None


def publish_hostname(worker) -> None:
    """After the hostname is set: a DHCP request carrying it (no interface bounce)."""
    r = _call(worker, "boot.publish_hostname", [])
    if r is not None:
        log.info("event=hostname_published hostname=%s interface=%s acked=%s", r["hostname"],
                 r["interface"], r["acked"])
