"""What the supervisor, the spawner and every worker must agree on before the first frame.

The supervisor (launch/) and the spawner (spawner/) build a worker's image from
these; the worker (workers/base.py) reads it back; the supervisor checks the worker's
`worker.hello` against it. One place, so no side can drift from another.

PROTOCOL_VERSION names the shape of the conversation on a worker channel: the verbs, their
schemas, the envelope. A worker started from other code than the supervisor's (a venv
upgraded under a running supervisor and an exec'd worker, a stale spawner) says another
number in its hello and is refused before it sends anything else. Raise it whenever a verb
a worker speaks changes shape.
"""

from typing import Optional

PROTOCOL_VERSION = 1

# The worker's end of its channel is always this descriptor (0: /dev/null, 1 and 2: its log
# pipe); the environment names it too, so the worker need not assume it.
CHANNEL_FD = 3

# The worker's environment: these and PATH, LANG, HOME, nothing else (launch/).
ENV_CHANNEL_FD = "GUESTAGENT_CHANNEL_FD"
ENV_WORKER = "GUESTAGENT_WORKER"
ENV_CONFIG = "GUESTAGENT_CONFIG"
ENV_LOG_LEVEL = "GUESTAGENT_LOG_LEVEL"
ENV_TEST_DIR = "GUESTAGENT_TEST_DIR"   # only while Agent.TestHooks=y (workers/base.py)


def title(name: str, privileged: bool = False) -> str:
    """The process title `ps` shows: `guestagent: <name> [unpriv]` (or `[priv]` for root's)."""
    return "guestagent: %s [%s]" % (name, "priv" if privileged else "unpriv")


def hello_mismatch(args: dict, worker: str, pid: Optional[int]) -> Optional[str]:
    """Why a (schema-checked) `worker.hello` does not fit the worker the supervisor started
    on that channel, or None. The channel is the identity: a worker naming another worker
    or pid, or speaking another protocol version, is refused."""
    if args["protocol"] != PROTOCOL_VERSION:
        return "hello speaks protocol %d, the supervisor speaks %d" % (args["protocol"],
                                                                       PROTOCOL_VERSION)
    if args["worker"] != worker or args["pid"] != pid:
        return "hello as %s pid %s" % (args["worker"], args["pid"])
    return None
