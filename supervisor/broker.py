"""The broker: the supervisor-side handlers of the verbs workers may call (policy.py says who).

A handler is `fn(ctx, args) -> result dict`, registered for one declared verb:
- fast handlers (well under 100 ms, no blocking I/O) run inline on the loop;
- slow handlers (`slow=True`: useradd, mkfs, an extension command) run in the broker's thread
  pool and reply later; `ctx.cancel` is set when the supervisor stops, and a slow handler must
  wait on it rather than sleep (DESIGN.md principle 6).
To fail, raise IpcError(FAILED, "why") — a failure is an answer, not a violation. Never put a
secret in the message. The lifecycle verbs (worker.*) are handled by the loop itself.

Adding a privileged verb = declare it in ipc/verbs/<domain>.py, add its Permit row in
policy.py, register its handler in a module of supervisor/privileged/ that the loop imports
(supervisor/privileged/provisioning.py lists the provisioning ones). Reviewed as a
security change.
"""

import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List

from ipc.verbs import lookup


@dataclass
class Context:
    worker: str
    conf: object                       # config.Config in effect
    cancel: threading.Event
    fds: List[int] = field(default_factory=list)   # descriptors the request carried
    # Descriptors to send with the reply (SCM_RIGHTS); the loop closes them once sent.
    reply_fds: List[int] = field(default_factory=list)


@dataclass(frozen=True)
class Handler:
    verb: str
    fn: Callable[[Context, dict], dict]
    slow: bool = False


HANDLERS: Dict[str, Handler] = {}


def handler(verb: str, slow: bool = False):
    def register(fn):
        lookup(verb)  # must be declared
        if verb in HANDLERS:
            raise ValueError("two handlers for %s" % verb)
        HANDLERS[verb] = Handler(verb, fn, slow)
        return fn
    return register


# --- test-only (granted by policy only with Agent.TestHooks=y) ----------------------------
@handler("debug.sleep", slow=True)
def debug_sleep(ctx: Context, args: dict) -> dict:
    import time
    start = time.monotonic()
    ctx.cancel.wait(args["seconds"])
    return {"slept": round(min(time.monotonic() - start, 600.0), 3)}
