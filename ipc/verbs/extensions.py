"""The extension verbs (issue 13, protocol.md §4): what the extensions worker needs from the
broker to run VM extensions as the platform's contract says — as root, from
/var/lib/waagent/<Name>-<Version>/ — while the worker itself never writes where root executes.

The worker downloads and verifies a package and hands the broker a descriptor; the broker
extracts it itself into a fresh root-owned folder. A command is named by (handler, version,
operation, sequence number), never by a command string: the broker reads the command from the
HandlerManifest.json of the folder it extracted. What ran is recorded by the broker in that
folder before it runs (config/GuestAgentRuns.json), so no restart of the worker makes a
command run twice for one sequence number. Only the extensions worker may call them.
"""

from ipc.schema import Bool, Enum, Int, List, Nullable, Num, Obj, Str
from ipc.verbs import declare

# A handler name as waagent's folders have it (the name is what comes before the first `-`
# of `<Name>-<Version>`): letters, digits, `.` and `_`, never `..` nor a leading dot.
NAME = Str(128, 1, r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.]*")
VERSION = Str(64, 1, r"[0-9]{1,9}(\.[0-9]{1,9}){0,5}")
# A multi-config extension name (config/<ext>.<seq>.settings); null for single-config.
EXTENSION = Nullable(Str(128, 1, r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]*"))
SEQ = Int(0, 2 ** 31 - 1)
OPERATIONS = ("install", "enable", "disable", "update", "uninstall")
EXIT_CODE = Nullable(Int(-255, 255))
IPV4 = Str(15, 7, r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
RUN_RECORD = Obj({"operation": Enum(*OPERATIONS), "seq": SEQ, "extension": EXTENSION,
                  "state": Enum("running", "done"), "exit_code": EXIT_CODE, "reason": Str(64)})

STATE = declare(
    "extensions.state",
    """What the broker knows of the extension contract folder (Lib.Dir): whether the agent is
    disabled (`disable_agent`, written when ProvisionGuestAgent=false), and each handler folder
    it extracted itself with the commands it ran there (oldest first; the last 32).""",
    result=Obj({"disable_agent": Bool(),
                "handlers": List(Obj({"name": NAME, "version": VERSION,
                                      "runs": List(RUN_RECORD, 32)}), 256)}),
)

INSTALL = declare(
    "extensions.install",
    """Extract the package zip passed as a descriptor (a regular file) into a fresh root-owned
    folder and rename it to Lib.Dir/<name>-<version>. Every entry's path is checked (no
    absolute path, no `..`, no symlink or device, no duplicate), and the entry count, the total
    size and each entry's compression ratio are capped (Extensions.MaxPackage*); a package
    that breaks a rule is refused whole (FAILED, with the rule) and nothing is left behind.
    The HandlerManifest.json is found (copied to the root if it is deeper) and parsed: a
    package without a valid one is refused. `existed`: the folder was there already.""",
    args=Obj({"name": NAME, "version": VERSION}),
    result=Obj({"existed": Bool(), "files": Int(0, 2 ** 31), "bytes": Int(0, 2 ** 53)}),
    timeout=300.0,
    max_fds=1,
)

CONFIGURE = declare(
    "extensions.configure",
    """Write HandlerEnvironment.json, the settings file config/<seq>.settings (multi-config:
    config/<extension>.<seq>.settings; 0600 root, as the platform sent it: protectedSettings
    still encrypted, with their thumbprint) and make status/, config/ and the log folder
    Extension.LogDir/<name>/ (events/ too) in an installed handler folder.""",
    args=Obj({"name": NAME, "version": VERSION, "extension": EXTENSION, "seq": SEQ,
              "settings": Str(512 * 1024, 2)}),
    result=Obj({"settings_file": Str(1024)}),
)

RUN = declare(
    "extensions.run",
    """Run one operation of an installed handler: the command is the broker's own reading of
    the folder's HandlerManifest.json, run through /bin/sh as root with the handler folder as
    working directory, in a cgroup of its own (a transient scope in
    guestagent-extensions.slice under systemd) with the environment of protocol.md §4.10,
    within the operation's timeout (Extensions.<Op>Timeout); on timeout the whole cgroup is
    killed. The run is recorded before it starts: the same operation with the same sequence
    number twice in a row for one extension (install and uninstall: twice at all) is
    FAILED. Output is
    captured with a bound (head and tail kept). `exit_code` null: killed (`reason`).""",
    args=Obj({"name": NAME, "version": VERSION, "operation": Enum(*OPERATIONS),
              "seq": SEQ, "extension": EXTENSION},
             {"wire_address": IPV4,
              "uninstall_exit_code": EXIT_CODE, "disable_exit_code": EXIT_CODE,
              "updating_from_version": VERSION}),
    result=Obj({"exit_code": EXIT_CODE, "reason": Str(64), "output": Str(16 * 1024),
                "seconds": Num(0, 1e7), "command": Str(1024)}),
    timeout=3600.0,
)

READ_STATUS = declare(
    "extensions.read_status",
    """The extension's status file status/<seq>.status (multi-config
    status/<extension>.<seq>.status) and heartbeat.log of an installed handler, each as text
    when it is a regular file of at most 128 KiB (null when absent; `*_size` says how large a
    refused one is), and the age in seconds of heartbeat.log. With one descriptor, the
    worker's own inotify instance: a watch on the handler's status folder is added to it
    before the read (`watched` says whether it was), so the worker asks again only when that
    folder changed.""",
    args=Obj({"name": NAME, "version": VERSION, "seq": SEQ, "extension": EXTENSION}),
    result=Obj({"status": Nullable(Str(128 * 1024)), "status_size": Int(-1, 2 ** 53),
                "status_error": Nullable(Str(256)),
                "heartbeat": Nullable(Str(128 * 1024)), "heartbeat_age": Nullable(Num(-1e9, 1e12)),
                "watched": Bool()}),
    max_fds=1,
)

REMOVE = declare(
    "extensions.remove",
    """Delete an installed handler folder Lib.Dir/<name>-<version> (after its uninstall, or
    an old version after an update). Its logs under Extension.LogDir are kept.""",
    args=Obj({"name": NAME, "version": VERSION}),
    result=Obj({"removed": Bool()}),
    timeout=60.0,
)
