"""Test-only verbs: the supervisor's policy grants them only while `Agent.TestHooks=y`.

They exist so the integration tests can prove properties of the broker with the real
supervisor (a verb that takes a minute must not stop heartbeats or `agentctl`), without a
test double. With the key off (the default and the only production setting) any call is a
DENIED violation like every other verb outside a worker's allowlist.
"""

from ipc.schema import Num, Obj
from ipc.verbs import declare

SLEEP = declare(
    "debug.sleep",
    """Sleep this many seconds in the broker's worker pool, then reply: a stand-in for a slow
    privileged verb (useradd, mkfs, an extension command). Ends early if the supervisor stops.""",
    args=Obj({"seconds": Num(0, 600)}),
    result=Obj({"slept": Num(0, 600)}),
    timeout=660.0,
)
