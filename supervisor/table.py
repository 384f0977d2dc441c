"""The worker table: one frozen record per worker, in start order (stopped in reverse).

Lifetimes (DESIGN.md, Processes): a SERVICE stays resident; a ONCE worker (provisioning)
runs once per boot and exits 0 when done (EXITED, not restarted; a failure is retried with
backoff, then FATAL until `agentctl start`); a PERIODIC worker (logcollector) runs on the
supervisor's timer and on demand, then exits. Timings come from the `Agent.*` keys; what
differs per worker is written here. Which verbs a worker may call: policy.py.
"""

import signal
from typing import Dict, NamedTuple, Optional, Tuple

from supervisor.backoff import BackoffPolicy

SERVICE = "service"
ONCE = "once"
PERIODIC = "periodic"

ALWAYS = "always"
ON_FAILURE = "on-failure"
NEVER = "never"

WIRE_GROUP = "guestagent-wire"
MiB = 1024 * 1024


class WorkerSpec(NamedTuple):   # not a dataclass: see config/keys.py Key
    name: str
    module: str                     # run as `python -I -m <module>`
    user: str
    group: str = WIRE_GROUP         # primary gid; no supplementary groups
    restart: str = ALWAYS
    autostart: bool = True
    ready_timeout: float = 60.0
    heartbeat_interval: float = 30.0
    heartbeat_misses: int = 2
    backoff: BackoffPolicy = BackoffPolicy()
    fatal_retry: float = 3600.0     # 0: a FATAL worker waits for agentctl start
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    slice: Optional[str] = None     # systemd slice (applied where systemd runs; see README)
    memory_soft_limit: int = 0      # resident bytes; above it the worker is restarted
    lifetime: str = SERVICE         # SERVICE, ONCE or PERIODIC (see above)
    initial_delay: float = 0.0      # PERIODIC: first run this long after the supervisor starts
    period: float = 0.0             # PERIODIC: then every period seconds (0: on demand only)
    after: Optional[str] = None     # start once this worker has ended (or after_timeout)
    after_timeout: float = 0.0

    @property
    def resident(self) -> bool:
        return self.lifetime == SERVICE


# Defaults per worker. Memory limits are ~3x the idle figure of benchmarks/idle_tree.py,
# leaving room for the real jobs; revisit when each job lands.
BASE: Tuple[WorkerSpec, ...] = (
    WorkerSpec("provisioning", "workers.provisioning", "guestagent-prov",
               restart=ON_FAILURE, memory_soft_limit=150 * MiB, lifetime=ONCE),
    # The services start when provisioning has ended (as waagent provisions before it
    # starts its extension handler), or Agent.StartAfterProvisioning seconds at the latest:
    # provisioning gets the CPU (its start -> Ready is a target) and no extension runs
    # before the VM's user exists.
    WorkerSpec("monitoring", "workers.monitoring", "guestagent-mon",
               memory_soft_limit=100 * MiB, after="provisioning"),
    WorkerSpec("extensions", "workers.extensions", "guestagent-ext",
               memory_soft_limit=200 * MiB, slice="guestagent-extensions.slice",
               after="provisioning"),
    WorkerSpec("logcollector", "workers.logcollector", "guestagent-logs",
               restart=NEVER, memory_soft_limit=150 * MiB, slice="guestagent-logcollector.slice",
               lifetime=PERIODIC, autostart=False),
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
        extra = {}
        ready_timeout = conf["Agent.ReadyTimeout"]
        if spec.lifetime == PERIODIC and spec.name == "logcollector":
            extra = dict(initial_delay=float(conf["Debug.LogCollectorInitialDelay"]),
                         period=float(conf["Logs.CollectPeriod"]) if conf["Logs.Collect"]
                         else 0.0)
            # Its start-up (two interpreters: spawner.drop, then the worker) runs at its
            # slice's CPU quota (5 %): the ready timeout scales with it.
            ready_timeout *= max(1.0, 100.0 / conf["Logs.CollectorCpuQuota"])
        if spec.after:
            extra["after_timeout"] = conf["Agent.StartAfterProvisioning"]
        table[spec.name] = spec._replace(
            ready_timeout=ready_timeout,
            heartbeat_interval=conf["Agent.HeartbeatInterval"],
            heartbeat_misses=conf["Agent.HeartbeatMisses"],
            backoff=backoff,
            # A ONCE worker that went FATAL has reported its failure to the platform each
            # time: it waits for an operator (`agentctl start`) rather than retrying hourly.
            fatal_retry=0.0 if spec.lifetime == ONCE else conf["Agent.FatalRetryPeriod"],
            stop_timeout=conf["Agent.StopTimeout"],
            memory_soft_limit=limit,
            **extra,
        )
    return table
