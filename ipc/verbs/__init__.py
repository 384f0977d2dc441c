"""The verb registry: every verb is declared once, in the module of its domain, with its
argument and result schemas and its documentation. Nothing may be sent or served that is not
declared here; `python -m ipc.verbs` prints the whole list as the reference.

Who may call a verb is not decided here but by the supervisor's policy table (the worker
table names each worker's verbs); here is only what a verb *is*.
"""

from typing import Dict, NamedTuple

from ipc.errors import INVALID_ARGS, UNKNOWN_VERB, IpcError
from ipc.schema import EMPTY, Obj, SchemaError


class Verb(NamedTuple):   # not a dataclass: see config/keys.py Key
    name: str
    doc: str
    args: Obj = EMPTY
    result: Obj = EMPTY
    # A notice is sent and never answered.
    notice: bool = False
    # Seconds a caller waits for the reply by default.
    timeout: float = 10.0
    # Control verbs only: may a member of guestagent-admin (not root) call it?
    readonly: bool = False
    # The request or reply carries file descriptors (SCM_RIGHTS): how many at most.
    max_fds: int = 0


REGISTRY: Dict[str, Verb] = {}


def declare(name: str, doc: str, **fields) -> Verb:
    if name in REGISTRY:
        raise ValueError("verb %s declared twice" % name)
    verb = Verb(name, " ".join(doc.split()), **fields)
    REGISTRY[name] = verb
    return verb


def lookup(name: str) -> Verb:
    try:
        return REGISTRY[name]
    except KeyError:
        raise IpcError(UNKNOWN_VERB, "no verb %r" % name[:64]) from None


def check_args(verb: Verb, args: dict) -> None:
    try:
        verb.args.check(args)
    except SchemaError as e:
        raise IpcError(INVALID_ARGS, "%s: %s" % (verb.name, e.message)) from None


def check_result(verb: Verb, result: dict) -> None:
    try:
        verb.result.check(result, "result")
    except SchemaError as e:
        raise IpcError(INVALID_ARGS, "%s returned %s" % (verb.name, e.message)) from None


def reference() -> str:
    """The verb reference, generated from the declarations."""
    lines = []
    for name in sorted(REGISTRY):
        verb = REGISTRY[name]
        kind = "notice" if verb.notice else "request"
        lines.append("%s (%s%s)" % (name, kind, ", read-only" if verb.readonly else ""))
        lines.append("    " + verb.doc)
        lines.append("    args:   " + verb.args.describe())
        if not verb.notice:
            lines.append("    result: " + verb.result.describe())
        lines.append("")
    return "\n".join(lines)


# Every domain module registers its verbs on import.
from ipc.verbs import control, worker  # noqa: E402,F401
from ipc.verbs import debug  # noqa: E402,F401  (test-only verbs; see policy)
from ipc.verbs import provisioning  # noqa: E402,F401  (issue 7)
from ipc.verbs import platform  # noqa: E402,F401  (issue 10 §2: the transport key)
from ipc.verbs import resource_disk  # noqa: E402,F401  (issue 12: resource disk, swap)
from ipc.verbs import extensions  # noqa: E402,F401  (issue 13: VM extensions)
from ipc.verbs import spawner  # noqa: E402,F401  (the zygote: supervisor <-> spawner only)
from ipc.verbs import boot  # noqa: E402,F401  (issue 12: per-boot kernel and network)
from ipc.verbs import logs  # noqa: E402,F401  (issue 15: the log collector's descriptors)
from ipc.verbs import firewall  # noqa: E402,F401  (issue 14: the WireServer firewall)
from ipc.verbs import telemetry  # noqa: E402,F401  (issue 14: event files for telemetry)
