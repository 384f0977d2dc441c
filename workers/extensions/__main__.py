"""The extensions worker: the goal-state loop, package download and verification, the handler
state machine and the status blob (workers/extensions/job.py; issue 13).

Runs as guestagent-ext with guestagent-wire as its primary group. It parses every platform
document and decides; each privileged effect (extracting a package, writing settings, running
a command as root, reading a status file) is an `extensions.*` verb of the broker.
"""

import os

import workers.platform  # noqa: F401  (loaded before ready: the idle figure is honest)

from workers.base import main


def job(worker):
    import config
    from ipc.handshake import ENV_CONFIG
    from workers.extensions.job import Job
    conf = config.load(os.environ.get(ENV_CONFIG, config.DEFAULT_PATH))
    Job(worker, conf).run()


if __name__ == "__main__":
    main("extensions", job)
