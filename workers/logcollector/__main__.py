"""The logcollector worker: manifest-driven log collection into a zip inside a slice with CPU and memory limits, and its upload.

Runs as guestagent-logs with guestagent-wire as its primary group, periodically and on demand
(supervisor/table.py, PERIODIC): the supervisor starts it `Debug.LogCollectorInitialDelay`
seconds after start-up and then every `Logs.CollectPeriod` seconds while `Logs.Collect=y`, and
on `agentctl collect-logs` / `waagent -collect-logs`; each run does its job and exits 0, so
nothing of it stays resident between runs.

For now only the lifecycle is real — hello, ready, one run, exit 0 — and a run collects
nothing: the collection itself (the manifest, the zip, the upload) comes in a later issue. It
already imports what that job will import (requests, cryptography, defusedxml), so the memory
figures of benchmarks/idle_tree.py are honest.
"""

# The platform client the real job will use (requests, cryptography, defusedxml), loaded now
# so a run weighs what a working one does.
import workers.platform  # noqa: F401

from workers.base import main


def collect(worker) -> int:
    """One run: (later) collect per the manifest, zip, upload; then exit 0."""
    worker.ready()
    worker.tick()
    worker.log.info("event=collect_logs nothing to collect yet (the collection comes in a "
                    "later issue)")
    worker.status("logcollector: nothing to collect yet")
    return 0


if __name__ == "__main__":
    main("logcollector", collect)
