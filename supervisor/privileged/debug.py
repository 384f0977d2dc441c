"""Test-only verbs (ipc/verbs/debug.py): granted only with Agent.TestHooks=y."""

import time

from ipc.verbs import debug as D
from supervisor.broker import EVERY, Context, Privileged


def debug_sleep(ctx: Context, args: dict) -> dict:
    start = time.monotonic()
    ctx.cancel.wait(args["seconds"])
    return {"slept": round(min(time.monotonic() - start, 600.0), 3)}


VERBS = (
    Privileged(D.SLEEP, debug_sleep, EVERY, slow=True, test_only=True),
)
