"""The vocabulary of a privileged verb's one declaration (it imports none of them).

Its wire contract (schemas, timeout, max_fds) is in ipc/verbs/<domain>.py, which workers
import; its handler and its `Privileged` row (contract, handler, permit) in a module of
supervisor/privileged/, in that module's VERBS tuple; the module listed in
supervisor/privileged/verbs.py, which builds the table explicitly. Reviewed as a security
change.

A handler is `fn(ctx, args) -> result dict`. Fast ones (well under 100 ms, no blocking I/O)
run inline on the loop; slow ones (`slow=True`) in the broker's pool, waiting on `ctx.cancel`
rather than sleeping (`privileged.run` does). To fail, raise IpcError(FAILED, "why"), never
with a secret in it: a failure is an answer, not a violation.
"""

import threading
from typing import Callable, FrozenSet, List, NamedTuple, Optional, Tuple

from ipc.verbs import Verb
from supervisor.table import NAMES

# ONCE per worker process, or per boot and VM id (recorded on disk before the handler runs:
# no crash or restart of any process runs it twice; privileged/gates.py).
PROCESS = "process"
BOOT = "boot"
# Who may call (the permits' worker sets) and the provisioning gate's name.
EVERY = frozenset(NAMES)
PROV = frozenset(("provisioning",))
MON = frozenset(("monitoring",))
PROVISIONING = "provisioning"
# Verb domains that are not privileged: the lifecycle (the loop's), control, the spawner's.
UNPRIVILEGED_DOMAINS = ("worker", "control", "spawner")


class Context:
    """What a handler gets beside its arguments. (Plain classes and NamedTuples here, not
    dataclasses: dataclasses imports inspect, ~1 MiB resident in the supervisor; issue 17.)"""

    def __init__(self, worker: str, conf, cancel: threading.Event,
                 fds: Optional[List[int]] = None, reply_fds: Optional[List[int]] = None):
        self.worker = worker
        self.conf = conf                   # config.Config in effect
        self.cancel = cancel
        self.fds = [] if fds is None else fds   # descriptors the request carried
        # Descriptors to send with the reply (SCM_RIGHTS); the loop closes them once sent.
        self.reply_fds = [] if reply_fds is None else reply_fds


class Privileged(NamedTuple):
    """One privileged verb: its contract, its handler and its permit, in one row."""
    decl: Verb
    fn: Callable[[Context, dict], dict]
    workers: FrozenSet[str]
    once: Optional[str] = None        # None, PROCESS or BOOT
    gate: Optional[str] = None        # granted only while this gate is open
    closes: Optional[str] = None      # success closes this gate for the boot and VM id
    slow: bool = False
    test_only: bool = False           # granted only with Agent.TestHooks=y
    routine: bool = False             # called every poll or period: its call logged at DEBUG
    # (workers, waagent.conf period key): these workers may call it again and again (ONCE
    # does not apply to them), but never sooner than half that period after their last call.
    periodic: Optional[Tuple[FrozenSet[str], str]] = None

    @property
    def verb(self) -> str:
        return self.decl.name
