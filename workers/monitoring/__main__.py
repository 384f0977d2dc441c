"""The monitoring worker: the WireServer firewall, the hostname monitor, the HealthService
heartbeat, telemetry and the periodic OS checks (issue 14; workers/monitoring/job.py).

Runs as guestagent-mon with guestagent-wire as its primary group. It decides; what needs root
(firewall rules, publishing a hostname, the OS checks) is a broker verb.
"""

import os

# The platform client the real job will use (requests, cryptography, defusedxml), loaded now
# so an idle worker weighs what a working one does.
import workers.platform  # noqa: F401

from workers.base import main


def job(worker):
    import config
    from ipc.handshake import ENV_CONFIG
    from workers.monitoring.job import run
    run(worker, config.load(os.environ.get(ENV_CONFIG, config.DEFAULT_PATH)))


if __name__ == "__main__":
    main("monitoring", job)
