"""The policy table: which worker may call which verb, and when (OpenSSH's monitor table).

One row per verb: a `Permit` below for the worker.* lifecycle, a `broker.Privileged` beside
each privileged handler. Undeclared: UNKNOWN_VERB; no row for this worker, used twice when
ONCE, before `worker.hello`, or behind a closed gate: DENIED; bad arguments: INVALID_ARGS.
Each is a violation: the worker is ended (DESIGN.md principle 5). A gate is closed on disk for
the boot and VM id (privileged/gates.py), by a `closes` verb or at start from what the
supervisor reads itself: no restart reopens it. Adding a row is a security change.
"""

import time
from typing import Dict, FrozenSet, Iterable, NamedTuple, Optional, Set, Tuple

from ipc import envelope
from ipc.errors import BAD_ENVELOPE, DENIED, IpcError
from ipc.verbs import Verb, check_args, lookup
from supervisor.broker import BOOT, EVERY, PROCESS, PROV, PROVISIONING  # noqa: F401
from supervisor.privileged import gates, state, verbs

HELLO = "worker.hello"


class Permit(NamedTuple):   # not a dataclass: see supervisor/broker.py Context
    verb: str
    workers: FrozenSet[str]
    once: Optional[str] = None
    gate: Optional[str] = None
    closes: Optional[str] = None
    test_only: bool = False
    periodic: Optional[Tuple[FrozenSet[str], str]] = None


LIFECYCLE = (
    # The lifecycle every worker speaks (ipc/verbs/worker.py), handled by the loop.
    Permit("worker.hello", EVERY, once=PROCESS),
    Permit("worker.ready", EVERY, once=PROCESS),
    Permit("worker.heartbeat", EVERY),
    Permit("worker.status", EVERY),
)


class Policy:
    """The table for one configuration, with the gates (which outlive worker processes)."""

    def __init__(self, table: Optional[Iterable] = None, test_hooks: bool = False,
                 conf=None):
        """table: default the lifecycle and the privileged rows; conf: to load the gates
        (without it, unit tests, they live in memory)."""
        if table is None:
            table = LIFECYCLE + tuple(verbs.table().values())
        self.permits: Dict[str, object] = {}
        for permit in table:
            if permit.verb in self.permits:
                raise ValueError("two rows for %s" % permit.verb)
            lookup(permit.verb)  # a row for an undeclared verb is a bug: fail at start
            if permit.test_only and not test_hooks:
                continue
            self.permits[permit.verb] = permit
        self.conf = conf
        self.gates = state.load_gates(conf) if conf is not None else gates.Gates(None, None, None)

    def session(self, worker: str) -> "Session":
        return Session(self, worker)

    def succeeded(self, verb: str) -> None:
        """A verb's handler succeeded: close its gate, if any."""
        permit = self.permits.get(verb)
        if permit is not None and permit.closes:
            self.gates.close(permit.closes)


class Session:
    """One worker process's conversation: its ONCE verbs used, whether it said hello."""

    def __init__(self, policy: Policy, worker: str):
        self.policy = policy
        self.worker = worker
        self.used: Set[str] = set()
        self.greeted = False
        self.last: Dict[str, float] = {}   # periodic verbs: monotonic time

    def check(self, msg) -> Verb:
        """Admit a parsed Request or Notice, or raise an IpcError whose code is a violation."""
        if isinstance(msg, envelope.Reply):
            raise IpcError(BAD_ENVELOPE, "a reply, but the supervisor asked nothing")
        name = msg.verb if isinstance(msg, envelope.Request) else msg.notice
        verb = lookup(name)  # UNKNOWN_VERB
        if verb.notice != isinstance(msg, envelope.Notice):
            raise IpcError(BAD_ENVELOPE, "%s must be sent as a %s" % (
                name, "notice" if verb.notice else "request"))
        permit = self.policy.permits.get(name)
        if permit is None or self.worker not in permit.workers:
            raise IpcError(DENIED, "%s may not call %s" % (self.worker, name))
        if not self.greeted and name != HELLO:
            raise IpcError(DENIED, "%s before worker.hello" % name)
        repeats = permit.periodic is not None and self.worker in permit.periodic[0]
        if permit.once and name in self.used and not repeats:
            raise IpcError(DENIED, "%s may be called once" % name)
        now = time.monotonic()
        if repeats and name in self.last and self.policy.conf is not None:
            floor = float(self.policy.conf[permit.periodic[1]]) / 2
            if now - self.last[name] < floor:
                raise IpcError(DENIED, "%s again after %.1f s: %s allows one call per %.1f s"
                               % (name, now - self.last[name], permit.periodic[1], floor))
        if permit.once == BOOT and name in self.policy.gates.done:
            raise IpcError(DENIED, "%s ran already this boot" % name)
        if permit.gate is not None and permit.gate in self.policy.gates.closed:
            raise IpcError(DENIED, "%s: the %s phase is over" % (name, permit.gate))
        check_args(verb, msg.args)  # INVALID_ARGS
        if permit.once == BOOT and not self.policy.gates.record(name):
            # Recorded before it runs: a crash mid-run must not let it run again.
            raise IpcError(DENIED, "%s ran already this boot (or cannot be recorded)" % name)
        self.used.add(name)
        if repeats:
            self.last[name] = now
        if name == HELLO:
            self.greeted = True
        return verb
