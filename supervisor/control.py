"""The control socket, `<Agent.RuntimeDir>/control.sock`, spoken by agentctl and waagent.

Who may do what is decided from the kernel's credentials of the peer (SO_PEERCRED, and
SO_PEERGROUPS for its supplementary groups), never from anything it says: root may call every
control verb, a member of guestagent-admin only the read-only ones (`readonly=True` in
ipc/verbs/control.py), anyone else nothing. The folder is root:guestagent-admin 0750 and the
socket 0660, so others cannot even connect; the credential check is the second wall.
"""

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import FrozenSet, Optional

from ipc.errors import DENIED, UNKNOWN_VERB, IpcError
from ipc.verbs import Verb, lookup

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
SOCKET_NAME = "control.sock"
MAX_CONNECTIONS = 32


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: FrozenSet[int]

    def describe(self) -> str:
        try:
            name = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            name = str(self.uid)
        return "%s (uid %d, pid %d)" % (name, self.uid, self.pid)


def admin_gid(group: str = "guestagent-admin") -> Optional[int]:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    groups = set()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 256)
        groups.update(struct.unpack("%dI" % (len(raw) // 4), raw))
    except OSError:
        # Older kernels: the groups the account database gives the uid.
        try:
            groups.update(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
        except KeyError:
            pass
    return Peer(pid, uid, gid, frozenset(groups))


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


def prepare_runtime_dir(path: str, admin: Optional[int]) -> None:
    """Create the runtime folder root:guestagent-admin 0750 (refuse one we do not own)."""
    os.makedirs(path, mode=0o750, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise PermissionError("%s is owned by uid %d, not by us" % (path, st.st_uid))
        if os.geteuid() == 0:
            os.fchown(fd, 0, admin if admin is not None else 0)
        os.fchmod(fd, 0o750)
    finally:
        os.close(fd)


def bind(runtime_dir: str, admin: Optional[int]) -> socket.socket:
    """Listen on control.sock; refuse to start beside a live supervisor."""
    prepare_runtime_dir(runtime_dir, admin)
    path = os.path.join(runtime_dir, SOCKET_NAME)
    if os.path.lexists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: its supervisor is gone
        else:
            raise RuntimeError("another supervisor is listening on %s" % path)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    # Bind under a restrictive umask, then open up to the group: never a window of 0777.
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    if os.geteuid() == 0:
        os.chown(path, 0, admin if admin is not None else 0)
    os.chmod(path, 0o660)
    sock.listen(16)
    sock.setblocking(False)
    return sock
