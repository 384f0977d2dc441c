"""The log collector's verbs (protocol.md §8): root-only files reach it as descriptors.

The worker never names a path. `logs.manifest` makes the broker expand its own manifest (the
agent's logs, extension logs and status, the goal-state history, the system logs) and keep the
list; the worker then asks for entries by their index in that list, and the broker opens each
one walking from / component by component with O_NOFOLLOW, so that a symlink anywhere on the
way (a folder under /var/log/azure pointing at /root/.ssh) ends the walk, and passes the
descriptor. `.prv` files are never listed.
"""

from ipc.schema import EMPTY, Int, List, Num, Obj, Str
from ipc.verbs import declare

MAX_ENTRIES = 2000
ENTRY_NAME = Str(300, 1)

ENTRY = Obj({
    "name": ENTRY_NAME,             # the archive name: the path without its leading /
    "size": Int(0, 1 << 50),
    "mtime": Num(0, 1 << 40),
    "priority": Int(0, 9),          # 0 first (waagent's order: agent log, status, history...)
})
SKIPPED = Obj({"name": ENTRY_NAME, "why": Str(120)})

MANIFEST = declare(
    "logs.manifest",
    """Expand the collection manifest in the broker (waagent's -full additions too when root
    asked for them with `agentctl collect-logs --full`, the broker's own record): the
    files found, in collection order (priority, then newest first), and what the expansion
    left out and why (a symlink, not a regular file, a private key). Replaces the list a
    previous call made.""",
    args=EMPTY,
    result=Obj({"files": List(ENTRY, MAX_ENTRIES),
                "skipped": List(SKIPPED, MAX_ENTRIES),
                "dropped": Int(0, 1 << 31)}),
    timeout=60.0,
)

OPEN = declare(
    "logs.open",
    """Open entry `index` of the list the last logs.manifest made (read-only, one descriptor),
    walking every component with O_NOFOLLOW and checking it is still a regular file, in
    folders only root (or the agent worker whose state it is) may write; fails FAILED with
    the reason otherwise.""",
    args=Obj({"index": Int(0, MAX_ENTRIES - 1)}),
    result=Obj({"name": ENTRY_NAME, "size": Int(0, 1 << 50)}),
    timeout=10.0,
    max_fds=1,
)

JOURNAL = declare(
    "logs.journal",
    """The journal of the agent's units (guestagent.service and its slices; the last days,
    short-iso) as one descriptor on a file the broker wrote with journalctl; FAILED when there
    is no journalctl or it fails.""",
    args=EMPTY,
    result=Obj({"size": Int(0, 1 << 40), "units": List(Str(100), 16)}),
    timeout=150.0,
    max_fds=1,
)
