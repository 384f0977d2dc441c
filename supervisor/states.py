"""Supervision states (supervisord's set) and their transitions. RUNNING: it has said
`worker.ready` (not: it has lived N seconds)."""

STOPPED = "STOPPED"      # not running, and not meant to (initial, or stopped by an operator)
STARTING = "STARTING"    # spawned, has not said worker.ready yet
RUNNING = "RUNNING"      # said worker.ready; heartbeats expected
BACKOFF = "BACKOFF"      # failed; waiting out the restart delay
STOPPING = "STOPPING"    # stop signal sent, waiting for the exit (SIGKILL at the stop timeout)
EXITED = "EXITED"        # ended and its restart policy says not to restart it
FATAL = "FATAL"          # failed too often within the flapping window; needs agentctl start

ALL = (STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL)

# state -> states it may move to
TRANSITIONS = {
    STOPPED: {STARTING},
    STARTING: {RUNNING, BACKOFF, STOPPING, EXITED, FATAL},
    RUNNING: {BACKOFF, STOPPING, EXITED, FATAL, STARTING},
    BACKOFF: {STARTING, STOPPED, FATAL},
    STOPPING: {STOPPED, STARTING, BACKOFF, EXITED, FATAL},
    EXITED: {STARTING},
    FATAL: {STARTING, STOPPED},
}

ALIVE = frozenset((STARTING, RUNNING, STOPPING))             # a process exists
STARTABLE = frozenset((STOPPED, EXITED, FATAL, BACKOFF))     # agentctl start is accepted


class TransitionError(AssertionError):
    pass


def check(old: str, new: str) -> None:
    if new not in TRANSITIONS[old]:
        raise TransitionError("%s -> %s is not a transition" % (old, new))
