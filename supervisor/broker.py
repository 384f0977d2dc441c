"""The broker: the supervisor-side handlers of the verbs workers may call.

A privileged verb is one declaration in two halves:
- its wire contract (name, doc, argument and result schemas, timeout, max_fds) in
  ipc/verbs/<domain>.py, because workers import it and may never import supervisor/;
- beside its handler in supervisor/privileged/<module>.py, its one `Privileged` row: that
  contract, the handler, and the permit (which workers, once, gate, closes, slow, test_only).
`supervisor/privileged/verbs.py` builds the table from the modules it lists (explicitly: no
registration by import side effect) and checks that every declared privileged verb has exactly
one row; the policy (policy.py) reads the permits from it. This module is the vocabulary the
rows are written in, and imports none of them.

A handler is `fn(ctx, args) -> result dict`:
- fast handlers (well under 100 ms, no blocking I/O) run inline on the loop;
- slow handlers (`slow=True`: useradd, mkfs, an extension command) run in the broker's thread
  pool and reply later; `ctx.cancel` is set when the supervisor stops, and a slow handler must
  wait on it rather than sleep (DESIGN.md principle 6); `privileged.run` does.
To fail, raise IpcError(FAILED, "why") — a failure is an answer, not a violation. Never put a
secret in the message. The lifecycle verbs (worker.*) are handled by the loop itself.

Adding a privileged verb = declare its contract in ipc/verbs/<domain>.py, write its handler
and its `Privileged` row in a module of supervisor/privileged/ (the row in that module's
VERBS tuple), and list the module in supervisor/privileged/verbs.py if it is new. Reviewed
as a security change.
"""

import threading
from dataclasses import dataclass, field
from typing import Callable, FrozenSet, List, Optional

from ipc.verbs import Verb
from supervisor.table import NAMES

# ONCE: at most one call per worker process (PROCESS), or per boot and VM id, recorded on
# disk before the handler runs, so that no crash or restart of any process runs it twice
# (BOOT; supervisor/privileged/gates.py).
PROCESS = "process"
BOOT = "boot"
# Who may call (the permits' worker sets) and the provisioning gate's name.
EVERY = frozenset(NAMES)
PROV = frozenset(("provisioning",))
PROVISIONING = "provisioning"
# Verb domains that are not privileged: the lifecycle (the loop's), the control socket's,
# the spawner's.
UNPRIVILEGED_DOMAINS = ("worker", "control", "spawner")


@dataclass
class Context:
    worker: str
    conf: object                       # config.Config in effect
    cancel: threading.Event
    fds: List[int] = field(default_factory=list)   # descriptors the request carried
    # Descriptors to send with the reply (SCM_RIGHTS); the loop closes them once sent.
    reply_fds: List[int] = field(default_factory=list)


@dataclass(frozen=True)
class Privileged:
    """One privileged verb: its contract, its handler and its permit, in one row."""
    decl: Verb
    fn: Callable[[Context, dict], dict]
    workers: FrozenSet[str]
    once: Optional[str] = None        # None, PROCESS or BOOT
    gate: Optional[str] = None        # granted only while this gate is open
    closes: Optional[str] = None      # success closes this gate for the boot and VM id
    slow: bool = False
    test_only: bool = False           # granted only with Agent.TestHooks=y

    @property
    def verb(self) -> str:
        return self.decl.name
