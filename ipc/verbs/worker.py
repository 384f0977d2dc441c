"""The lifecycle verbs every worker speaks with the supervisor, whatever its job."""

from ipc.schema import Int, Num, Obj, Str, WORKER_NAME
from ipc.verbs import declare

HELLO = declare(
    "worker.hello",
    """First message of a worker on its channel: who it says it is and which protocol it
    speaks (ipc/handshake.py PROTOCOL_VERSION). The supervisor already knows who (the
    channel is the identity) and speaks one protocol: a mismatch of either ends the worker.
    The reply carries the heartbeat interval the supervisor expects.""",
    args=Obj({"worker": WORKER_NAME, "pid": Int(1, 2 ** 31), "protocol": Int(1, 2 ** 16)}),
    result=Obj({"heartbeat_interval": Num(0.01, 3600)}),
)

READY = declare(
    "worker.ready",
    """The worker has started its job: it becomes RUNNING. Sent once.""",
    notice=True,
)

HEARTBEAT = declare(
    "worker.heartbeat",
    """I am alive and my loop turns. Missing several in a row means hung: killed, restarted.""",
    notice=True,
)

STATUS = declare(
    "worker.status",
    """A one-line description of what the worker is doing, shown by `agentctl status`.""",
    args=Obj({"message": Str(200)}),
    notice=True,
)
