"""The control socket's verbs, spoken by `agentctl` (and `waagent`) to the supervisor.

Root may call every verb; members of guestagent-admin only the read-only ones (SO_PEERCRED).
"""

from ipc.schema import Bool, Enum, Int, List, Nullable, Num, Obj, Str, WORKER_NAME
from ipc.verbs import declare

STATES = ("STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL")

WORKER_RECORD = Obj({
    "name": WORKER_NAME,
    "state": Enum(*STATES),
    "pid": Nullable(Int(1, 2 ** 31)),
    "user": Str(32),
    "uptime": Nullable(Num(0, 1e10)),
    "restarts": Int(0, 2 ** 31),
    "last_exit": Nullable(Str(200)),
    "rss": Nullable(Int(0, 2 ** 50)),
    "cpu_percent": Nullable(Num(0, 100000)),
    "message": Str(200),
}, optional={
    # Added with the worker lifetimes: service (resident), once (per boot), periodic.
    "lifetime": Enum("service", "once", "periodic"),
    # Seconds until the supervisor starts it (a periodic worker's next run, or a resident
    # one waiting for provisioning to end); null when no timer is set.
    "next_run": Nullable(Num(0, 1e10)),
})

SPAWNER_RECORD = Obj({
    "method": Enum("zygote", "exec"),       # how workers start now
    "state": Enum("off", "ready", "fallback", "retired"),
    "pid": Nullable(Int(1, 2 ** 31)),
    "starts": Int(0, 2 ** 31),
    "uptime": Nullable(Num(0, 1e10)),
    "rss": Nullable(Int(0, 2 ** 50)),
    "message": Str(300),                    # why it fell back to fork+exec, if it did
})

SUPERVISOR_RECORD = Obj({
    "pid": Int(1, 2 ** 31),
    "version": Str(64),
    "uptime": Num(0, 1e10),
    "rss": Nullable(Int(0, 2 ** 50)),
    "config": Str(4096),
})

STATUS = declare(
    "control.status",
    """The state of the supervisor and of every worker, or of one.""",
    args=Obj(optional={"worker": WORKER_NAME}),
    result=Obj({"supervisor": SUPERVISOR_RECORD, "workers": List(WORKER_RECORD, 64)},
               optional={"spawner": SPAWNER_RECORD}),
    readonly=True,
)

COLLECT_LOGS = declare(
    "control.collect_logs",
    """Run the logcollector now (or join the run under way); returns when it has exited,
    with its record, or fails with its exit status. Root only: a collection reads every log.
    full: the run collects waagent's -full manifest too (the broker keeps that request itself
    and applies it to the next manifest it expands; the worker has no say).""",
    args=Obj(optional={"full": Bool()}),
    result=Obj({"worker": WORKER_RECORD}),
    timeout=900.0,
)

START = declare(
    "control.start",
    """Start a STOPPED, EXITED or FATAL worker; returns once it is RUNNING or has failed.""",
    args=Obj({"worker": WORKER_NAME}),
    result=Obj({"worker": WORKER_RECORD}),
    timeout=120.0,
)

STOP = declare(
    "control.stop",
    """Stop a worker (its stop signal, then SIGKILL after its stop timeout); it stays stopped.""",
    args=Obj({"worker": WORKER_NAME}),
    result=Obj({"worker": WORKER_RECORD}),
    timeout=120.0,
)

RESTART = declare(
    "control.restart",
    """Stop then start a worker; returns when it is RUNNING again, or fails with the reason.""",
    args=Obj({"worker": WORKER_NAME}),
    result=Obj({"worker": WORKER_RECORD}),
    timeout=240.0,
)

LOGS = declare(
    "control.logs",
    """An open read-only descriptor of a worker's log file (passed with SCM_RIGHTS), so the
    caller can print the last lines and follow it without the supervisor copying bytes.""",
    args=Obj({"worker": WORKER_NAME}),
    result=Obj({"path": Str(4096)}),
    readonly=True,
    max_fds=1,
)

VERSION = declare(
    "control.version",
    """The supervisor's version and its Python.""",
    result=Obj({"version": Str(64), "python": Str(64), "waagent_version": Str(64)}),
    readonly=True,
)

RELOAD = declare(
    "control.reload",
    """Re-read the configuration (as SIGHUP does).""",
    result=Obj({"problems": List(Str(512), 1000), "reloaded": Bool()}),
)
