"""The provisioning worker: once per VM, the OVF environment, the goal state, user, keys,
password and hostname through the broker, then report Ready (workers/provisioning/job.py).

Runs as guestagent-prov with guestagent-wire as its primary group, once per boot: it exits
when provisioning is over (restart policy on-failure). The per-boot work (resource disk, swap,
SCSI timeouts, entropy) comes in its own issue.
"""

from workers.base import main
from workers.provisioning.job import job

if __name__ == "__main__":
    main("provisioning", job)
