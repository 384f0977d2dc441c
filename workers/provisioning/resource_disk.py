"""The provisioning worker's every-boot resource disk and swap (protocol.md §5): one broker
verb, resource_disk.activate, that takes no argument (the broker decides the device, the
mount point and the swap file from waagent.conf and what it reads itself). Once per boot and
VM id on the broker's disk: a rerun of this worker (a retry, a supervisor restart) is answered
`skipped`, and nothing is touched.

Never fatal, as in waagent: a failure is logged and provisioning goes on. The per-step
seconds land in one `event=resource_disk_done` line (benchmarks/resource_disk.py reads the
broker's twin of it).
"""

import logging

from ipc.errors import IpcError

log = logging.getLogger("provisioning.resource_disk")

VERB = "resource_disk.activate"


def begin(worker) -> int:
    """Ask for it at the worker's start; the broker works on the disk while provisioning goes
    on (both are slow and touch different things), and `finish` waits for it before Ready is
    reported, so the disk is ready when the platform hears Ready, as with waagent."""
    worker.status("provisioning: resource disk")
    return worker.begin(VERB, {})


def finish(worker, ident: int) -> None:
    try:
        r, _ = worker.collect(VERB, ident)
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
