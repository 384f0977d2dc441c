"""Who may use the control socket, `<Agent.RuntimeDir>/control.sock` (agentctl, waagent):
decided from the kernel's credentials of the peer (ipc/server.py), never from what it says.
Root may call every control verb, a member of guestagent-admin only the `readonly=True` ones
(ipc/verbs/control.py), anyone else nothing. The folder is root:guestagent-admin 0750 and the
socket 0660, so others cannot even connect; this check is the second wall.
"""

import grp
from typing import Optional

from ipc.errors import DENIED, UNKNOWN_VERB, IpcError
from ipc.server import Peer
from ipc.verbs import Verb, lookup

SOCKET_NAME = "control.sock"


def admin_gid(group: str = "guestagent-admin") -> Optional[int]:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def authorize(peer: Peer, verb_name: str, admin: Optional[int]) -> Verb:
    """The control verb if this peer may call it; IpcError(UNKNOWN_VERB / DENIED) otherwise."""
    if not verb_name.startswith("control."):
        raise IpcError(UNKNOWN_VERB, "%s is not a control verb" % verb_name[:64])
    verb = lookup(verb_name)
    if peer.uid == 0:
        return verb
    is_admin = admin is not None and (peer.gid == admin or admin in peer.groups)
    if is_admin and verb.readonly:
        return verb
    if is_admin:
        raise IpcError(DENIED, "%s needs root (guestagent-admin may only read)" % verb_name)
    raise IpcError(DENIED, "only root and guestagent-admin may use the control socket")
