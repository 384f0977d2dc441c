"""The root supervisor of guestagent (guestagentd): spawns and supervises the workers
(loop.py, process.py), brokers their privileged verbs (policy.py, broker.py, privileged/),
captures their logs and serves the control socket (control.py). Keep this file free of heavy
imports: agentctl and the spawner import small pieces of this package.
"""

# One source for both versions (config/version.py), re-exported for the supervisor's modules.
from config.version import GUESTAGENT_VERSION as VERSION, WAAGENT_VERSION  # noqa: E402,F401
