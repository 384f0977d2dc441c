"""Telemetry event files (issue 14, protocol.md §1.11, §4.13): the monitoring worker's one verb.

Event files are written by root: the agent's own (`<Lib.Dir>/events/*.tld`) and the extensions'
(`<Extension.LogDir>/<Handler>/events/<digits>.json`, written by extensions running as root,
folder 0700). The worker names no path: the broker walks only its own folders (the agent's, and
the events folder of each handler it installed itself), opens every file with O_NOFOLLOW and
O_NONBLOCK, reads only regular files up to a cap, and removes each file it hands over or
refuses (a file is never handed over twice, a bad one never comes back). The bytes are parsed
by the worker: the broker never interprets what an extension wrote.
"""

from ipc.schema import Bool, Enum, Int, List, Obj, Str
from ipc.verbs import declare

# A reply is sent without blocking the broker's loop: it must fit the worker's socket buffer
# (net.core.wmem_default, 208 KiB), so one answer carries at most 96 KiB of files (128 KiB in
# base64), and a larger file is removed unread (waagent reads extension files up to 4 MiB).
MAX_FILE_BYTES = 96 * 1024
MAX_CALL_BYTES = 96 * 1024
MAX_CALL_FILES = 64
FILE_NAME = Str(255, 1, r"[^/\x00]+")

EVENT_FILE = Obj({
    "source": Enum("agent", "extension"),
    "handler": Str(128),            # the handler's name for an extension's file, "" for agent
    "name": FILE_NAME,
    "data": Str(MAX_FILE_BYTES * 4 // 3 + 4),   # base64 of the file's bytes
})
REFUSED = Obj({"source": Enum("agent", "extension"), "handler": Str(128), "name": FILE_NAME,
               "why": Str(200)})

COLLECT = declare(
    "telemetry.collect",
    """Hand over (and remove) the oldest event files: the agent's <Lib.Dir>/events/*.tld and
    the <digits>.json files in <Extension.LogDir>/<Handler>/events/ of every handler the broker
    installed, at most 64 files and 96 KiB per call, each file base64. Files that are not
    regular files, symlinks, hard links, or larger than 96 KiB are removed unread and listed
    in refused.
    more: there are files left; call again.""",
    result=Obj({"files": List(EVENT_FILE, MAX_CALL_FILES),
                "refused": List(REFUSED, MAX_CALL_FILES),
                "more": Bool()}),
    timeout=30.0,
)
