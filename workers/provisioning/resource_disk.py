"""The provisioning worker's every-boot resource disk and swap (protocol.md §5): one broker
verb, resource_disk.activate, that takes no argument (the broker decides the device, the
mount point and the swap file from waagent.conf and what it reads itself). Once per boot and
VM id on the broker's disk: a rerun of this worker (a retry, a supervisor restart) sees it in
provisioning.state's `done` and does not knock again (a refused verb is a violation).

Never fatal, as in waagent: a failure is logged and provisioning goes on. The per-step
seconds land in one `event=resource_disk_done` line (benchmarks/resource_disk.py reads the
broker's twin of it).
"""

import logging

from ipc.errors import IpcError

log = logging.getLogger("provisioning.resource_disk")

VERB = "resource_disk.activate"


def every_boot(worker) -> None:
    try:
        state, fds = worker.call("provisioning.state", {})
        if VERB in state["done"]:
            log.info("event=resource_disk_already_done this boot: not asked again")
            return
        worker.status("provisioning: resource disk")
        r, fds = worker.call(VERB, {})
    except IpcError as e:
        log.error("event=resource_disk_done ok=false error=%r", e.message[:500])
        return
    if r["skipped"]:
        log.info("event=resource_disk_done skipped=%r", r["skipped"])
        return
    log.info("event=resource_disk_done ok=true device=%s mount_point=%s formatted=%s "
             "already_mounted=%s swap_mb=%d %s", r["device"], r["mount_point"], r["formatted"],
             r["already_mounted"], r["swap_mb"],
             " ".join("%s=%.3f" % kv for kv in sorted(r["seconds"].items())))
    if r["swap_error"]:
        log.error("event=swap_failed error=%r", r["swap_error"])
