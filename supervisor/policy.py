"""The policy table: which worker may call which verb, and when (OpenSSH's monitor table).

Every verb a worker may send is one `Permit` row below. A verb that is not declared in
ipc/verbs is UNKNOWN_VERB; declared but with no row for this worker, used twice when ONCE,
sent before `worker.hello`, or behind a closed gate, is DENIED; arguments that do not fit its
schema are INVALID_ARGS. All of these are violations: the loop ends the worker and logs a
security event (DESIGN.md principle 5). There is no generic verb and no getattr dispatch.

Flags:
- once:   at most one call per worker process (worker.hello, worker.ready; later e.g. a
          password set) — a second call is DENIED.
- gate:   allowed only while the named gate is open. Gates are open when the supervisor
          starts and close for the rest of its life (this boot) when a verb with `closes`
          succeeds — e.g. the provisioning verbs close with `provisioning.done`. A restarted
          worker does not reopen them.
- test_only: granted only when `Agent.TestHooks=y` (off by default; never in production).

Adding a row is a security change: review it as one, with the handler in broker.py.
"""

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, Optional, Set

from ipc import envelope
from ipc.errors import BAD_ENVELOPE, DENIED, IpcError
from ipc.verbs import Verb, check_args, lookup
from supervisor.table import NAMES

EVERY = frozenset(NAMES)
HELLO = "worker.hello"
PROV = frozenset(("provisioning",))
DECRYPTERS = frozenset(("provisioning", "extensions"))   # the workers that hold the key
PROVISIONING = "provisioning"   # the gate of the provisioning verbs


@dataclass(frozen=True)
class Permit:
    verb: str
    workers: FrozenSet[str]
    once: bool = False
    gate: Optional[str] = None
    closes: Optional[str] = None
    test_only: bool = False


TABLE = (
    # The lifecycle every worker speaks (ipc/verbs/worker.py).
    Permit("worker.hello", EVERY, once=True),
    Permit("worker.ready", EVERY, once=True),
    Permit("worker.heartbeat", EVERY),
    Permit("worker.status", EVERY),
    # Provisioning (ipc/verbs/provisioning.py, supervisor/privileged/): the provisioning
    # worker only; everything but the read-only state behind the `provisioning` gate, which
    # provisioning.finish closes for the rest of the boot (issue 7).
    Permit("provisioning.state", PROV),
    Permit("provisioning.read_ovf", PROV, gate=PROVISIONING),
    Permit("provisioning.forget_previous_vm", PROV, once=True, gate=PROVISIONING),
    Permit("provisioning.hostname", PROV, once=True, gate=PROVISIONING),
    Permit("provisioning.user", PROV, once=True, gate=PROVISIONING),
    Permit("provisioning.password", PROV, once=True, gate=PROVISIONING),
    Permit("provisioning.sudoers", PROV, once=True, gate=PROVISIONING),
    Permit("provisioning.sshd_config", PROV, once=True, gate=PROVISIONING),
    Permit("provisioning.authorized_key", PROV, gate=PROVISIONING),
    Permit("provisioning.key_pair", PROV, gate=PROVISIONING),
    Permit("provisioning.custom_data", PROV, once=True, gate=PROVISIONING),
    Permit("provisioning.lock_root_password", PROV, once=True, gate=PROVISIONING),
    Permit("provisioning.host_keys", PROV, once=True, gate=PROVISIONING),
    Permit("provisioning.restart_sshd", PROV, once=True, gate=PROVISIONING),
    Permit("provisioning.finish", PROV, once=True, gate=PROVISIONING, closes=PROVISIONING),
    # The transport key, as a read-only descriptor, to the workers that decrypt only
    # (ipc/verbs/platform.py, supervisor/privileged/platform.py; issue 10 §2).
    Permit("platform.transport_key", DECRYPTERS),
    # Test-only: a slow verb to prove the loop never blocks (ipc/verbs/debug.py).
    Permit("debug.sleep", EVERY, test_only=True),
)


class Policy:
    """The table for one configuration, with the gates (which outlive worker processes)."""

    def __init__(self, table: Iterable[Permit] = TABLE, test_hooks: bool = False):
        self.permits: Dict[str, Permit] = {}
        for permit in table:
            if permit.verb in self.permits:
                raise ValueError("two rows for %s" % permit.verb)
            lookup(permit.verb)  # a row for an undeclared verb is a bug: fail at start
            if permit.test_only and not test_hooks:
                continue
            self.permits[permit.verb] = permit
        self.closed_gates: Set[str] = set()

    def allowed(self, worker: str):
        """The verbs a worker may call now (for the documentation and the status record)."""
        return sorted(v for v, p in self.permits.items()
                      if worker in p.workers and p.gate not in self.closed_gates)

    def session(self, worker: str) -> "Session":
        return Session(self, worker)

    def succeeded(self, verb: str) -> None:
        """Called by the loop after a verb's handler succeeded: closes its gate, if any."""
        permit = self.permits.get(verb)
        if permit is not None and permit.closes:
            self.closed_gates.add(permit.closes)


@dataclass
class Session:
    """One worker process's conversation: its ONCE verbs used, whether it said hello."""

    policy: Policy
    worker: str
    used: Set[str] = field(default_factory=set)
    greeted: bool = False

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
        if permit.once and name in self.used:
            raise IpcError(DENIED, "%s may be called once" % name)
        if permit.gate is not None and permit.gate in self.policy.closed_gates:
            raise IpcError(DENIED, "%s: the %s phase is over" % (name, permit.gate))
        check_args(verb, msg.args)  # INVALID_ARGS
        self.used.add(name)
        if name == HELLO:
            self.greeted = True
        return verb
