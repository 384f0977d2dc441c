"""The extensions worker: the goal-state loop, package download and verification, the handler state machine and the status blob.

Runs as guestagent-ext with guestagent-wire as its primary group. For now (issue 3) it only does its
lifecycle — hello, ready, heartbeats, a clean exit on SIGTERM — through workers/base.py; its
job comes in a later issue. It already imports what that job will import (requests,
cryptography, defusedxml), so the memory figures of benchmarks/idle_tree.py are honest.
"""

# The platform client the real job will use (requests, cryptography, defusedxml), loaded now
# so an idle worker weighs what a working one does.
import workers.platform  # noqa: F401

from workers.base import main

if __name__ == "__main__":
    main("extensions")
