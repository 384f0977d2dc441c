"""The worker table: one frozen record per worker (DESIGN.md, Worker table).

The order of WORKERS is the start order; the supervisor stops them in reverse. Timings come
from the `Agent.*` keys of waagent.conf so one file tunes a fleet (and lets the tests run the
real paths in milliseconds); what differs per worker (user, restart policy, memory limit,
slice) is written here and reviewed with the code.

Which verbs a worker may call is not a field here but the policy table (policy.py), so that a
new privileged verb is one reviewed entry in one place.
"""

import signal
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

from supervisor.backoff import BackoffPolicy

ALWAYS = "always"
ON_FAILURE = "on-failure"
NEVER = "never"

WIRE_GROUP = "guestagent-wire"
ADMIN_GROUP = "guestagent-admin"
MiB = 1024 * 1024


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    module: str                     # run as `python -I -m <module>`
    user: str
    group: str = WIRE_GROUP         # primary gid; no supplementary groups
    restart: str = ALWAYS
    autostart: bool = True
    ready_timeout: float = 60.0
    heartbeat_interval: float = 5.0
    heartbeat_misses: int = 6
    backoff: BackoffPolicy = BackoffPolicy()
    fatal_retry: float = 3600.0     # 0: a FATAL worker waits for agentctl start
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    slice: Optional[str] = None     # systemd slice (applied where systemd runs; see README)
    memory_soft_limit: int = 0      # resident bytes; above it the worker is restarted

    @property
    def title(self) -> str:
        return "guestagent: %s [unpriv]" % self.name


# Defaults per worker. Memory limits are ~3x the idle figure of benchmarks/idle_tree.py,
# leaving room for the real jobs; revisit when each job lands.
BASE: Tuple[WorkerSpec, ...] = (
    WorkerSpec("provisioning", "workers.provisioning", "guestagent-prov",
               restart=ON_FAILURE, memory_soft_limit=150 * MiB),
    WorkerSpec("monitoring", "workers.monitoring", "guestagent-mon",
               memory_soft_limit=100 * MiB),
    WorkerSpec("extensions", "workers.extensions", "guestagent-ext",
               memory_soft_limit=200 * MiB, slice="guestagent-extensions.slice"),
    WorkerSpec("logcollector", "workers.logcollector", "guestagent-logs",
               memory_soft_limit=150 * MiB, slice="guestagent-logcollector.slice"),
)

NAMES = tuple(spec.name for spec in BASE)


def build(conf) -> Dict[str, WorkerSpec]:
    """The table for a configuration, in start order."""
    backoff = BackoffPolicy(delay=conf["Agent.BackoffDelay"],
                            max_delay=conf["Agent.BackoffMaxDelay"],
                            window=conf["Agent.FlapWindow"],
                            max_failures=conf["Agent.FlapMaxFailures"])
    table = {}
    for spec in BASE:
        limit = conf["Agent.MemorySoftLimit"] or spec.memory_soft_limit
        table[spec.name] = replace(
            spec,
            ready_timeout=conf["Agent.ReadyTimeout"],
            heartbeat_interval=conf["Agent.HeartbeatInterval"],
            heartbeat_misses=conf["Agent.HeartbeatMisses"],
            backoff=backoff,
            fatal_retry=conf["Agent.FatalRetryPeriod"],
            stop_timeout=conf["Agent.StopTimeout"],
            memory_soft_limit=limit,
        )
    return table
