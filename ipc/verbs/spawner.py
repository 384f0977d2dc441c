"""The spawner domain: the supervisor (supervisor/spawner.py) and its preloaded spawner
(spawner/).

Spoken only on the socketpair the supervisor made when it started the spawner; no worker
ever holds that socket, and the policy table grants no `spawner.*` verb to any worker, so a
worker that sends one is ended like for any other denied verb.
"""

from ipc.schema import Int, Map, Nullable, Obj, Str, WORKER_NAME
from ipc.verbs import declare

PID = Int(1, 2 ** 22)          # pid_max is at most 2^22 on Linux
ID = Int(0, 2 ** 32 - 2)       # uid or gid; (uid_t)-1 excluded
ENV_NAME = Str(64, 1, r"[A-Z][A-Z0-9_]*")
# A cgroup directory (supervisor/trees.py): absolute, under the cgroup mounts, no "..".
CGROUP = Str(4096, 1, r"/sys/fs/cgroup(/(?!\.\.?/|\.\.?$)[A-Za-z0-9_.@:-]+)+")

READY = declare(
    "spawner.ready",
    """First message of the spawner: it has imported what workers import, frozen its heap
    (gc.freeze) and takes spawn orders from now on.""",
    args=Obj({"pid": PID}),
    notice=True,
)

SPAWN = declare(
    "spawner.spawn",
    """Fork a worker from the preloaded image. The request carries two descriptors, in this
    order: the worker's end of its channel and the write end of its log pipe. The child
    drops to uid/gid (null: stay as the spawner, for a non-root run), is reparented to the
    supervisor (a child subreaper) so the supervisor reaps it by pid, enters `cgroup` (the
    worker's own, made by the supervisor; null: none) while still root, keeps nothing but those
    two descriptors and /dev/null, clears its environment to `env`, and runs
    `module`'s __main__ as `python -I -m module` would. The reply names the worker's pid.""",
    args=Obj({"worker": WORKER_NAME,
              "module": Str(64, 1, r"workers\.[a-z][a-z0-9_]*"),
              "uid": Nullable(ID),
              "gid": Nullable(ID),
              "env": Map(ENV_NAME, Str(4096), 16)},
             {"cgroup": Nullable(CGROUP)}),
    result=Obj({"pid": PID}),
    max_fds=2,
    timeout=5.0,
)
