"""The transport key, held by the broker (issue 10 §2, DESIGN.md "Ownership").

`<StateDir>/platform/` is root's, 0700: TransportPrivate.pem (0600), TransportCert.pem and
Transport.tag (`<product_uuid> <renew-after>`). The pair is made once per VM id by a child
process (supervisor/privileged/transport_key.py), ahead of need when the first worker is
spawned, and again when SMBIOS's product_uuid (the VM id, read by the broker itself) is not
the tag's (a captured image booted as a new VM) or the certificate nears its end.

`platform.transport_key` (policy: provisioning and extensions only) answers with the
certificate and the key as a descriptor opened read-only for that call: the supervisor never
reads the key, the worker reads it from the descriptor and never writes it anywhere.
Monitoring and logcollector are not in the policy row: asking is a violation that ends them.
"""

import errno
import logging
import os
import re
import stat
import sys
import threading
import time

from ipc.verbs import platform as P
from supervisor.broker import Context, Privileged
from supervisor.table import NAMES
from supervisor.privileged import ensure_root_dir, fail, read_capped, run
from supervisor.privileged.transport_key import (CERT_FILE, KEY_FILE, TAG_FILE,
                                                 write_pair_with_openssl)

log = logging.getLogger("guestagent.broker.platform")

FOLDER = "platform"
PRODUCT_UUID = "sys/class/dmi/id/product_uuid"
GUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NO_VM_ID = "none"
# A new pair this long before the certificate's end (it is valid 730 days).
RENEW_BEFORE = 30 * 86400
MAX_CERT_BYTES = 16 * 1024
GENERATE_TIMEOUT = 120.0
# What each worker remembers of the platform in its own folder (workers/platform/endpoint.py):
# a new VM must not inherit it (protocol.md §6.3 lists waagent's copy).
SAVED_ENDPOINT_FILE = "WireServerEndpoint"

# One maker at a time; a verb that comes while the pair is being made waits for it.
_lock = threading.Lock()
_prepared = set()
# Set once this run's first making has ended, however it ended. The SSH host keys wait for it
# (ssh.py): the worker needs this key first, and on a boot short of CPU (two emulated vCPUs)
# the two RSA prime searches side by side each took twice as long (benchmarks/README.md).
first_made = threading.Event()


def wait_for_first(timeout: float, cancel=None) -> float:
    """Wait (at most `timeout` s, or until `cancel`) for this run's first making to end; the
    seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    while not first_made.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline or (cancel is not None and cancel.is_set()):
            break
    return time.monotonic() - started


def folder_of(conf) -> str:
    return os.path.join(conf["Agent.StateDir"], FOLDER)


def vm_tag(conf) -> str:
    """SMBIOS's product_uuid (lower case) as the broker reads it, or "none"."""
    path = os.path.join(conf["OS.SysRoot"] or "/", PRODUCT_UUID)
    try:
        data = read_capped(path, 64, follow=True)
    except Exception as e:  # noqa: B902 - unreadable is "no VM id", logged
        log.warning("event=product_uuid_unreadable path=%s error=%r", path, str(e))
        return NO_VM_ID
    value = (data or b"").decode("ascii", "replace").strip().lower()
    return value if GUID_RE.fullmatch(value) else NO_VM_ID


def _root_file(path: str, flags: int = os.O_RDONLY) -> int:
    """A descriptor of a regular root file, 0600 or stricter, with one link; never a link."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    st = os.fstat(fd)
    if (not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_nlink != 1
            or st.st_mode & 0o077):
        os.close(fd)
        raise OSError(errno.EPERM, "not a root-only regular file")
    return fd


def _kept_tag(folder: str):
    """The words of the kept pair's tag, [] if it has none we trust."""
    try:
        fd = _root_file(os.path.join(folder, TAG_FILE))
    except OSError:
        return []
    try:
        return os.read(fd, 256).decode("ascii", "replace").split()
    finally:
        os.close(fd)


def _current(folder: str, tag: str) -> bool:
    """Whether the kept pair is this VM's, whole, root's and not near its end."""
    try:
        for name in (KEY_FILE, CERT_FILE):
            os.close(_root_file(os.path.join(folder, name)))
    except OSError:
        return False
    words = _kept_tag(folder)
    if len(words) != 2 or words[0] != tag or not words[1].isdigit():
        return False
    return time.time() < int(words[1]) - RENEW_BEFORE


def _forget_saved_endpoints(conf) -> None:
    """The previous VM's endpoint, remembered in each worker's folder, removed (unlink never
    follows the last component; the folder is opened without following a link)."""
    for name in NAMES:
        try:
            dir_fd = os.open(os.path.join(conf["Agent.StateDir"], name),
                             os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.unlink(SAVED_ENDPOINT_FILE, dir_fd=dir_fd)
            log.info("event=previous_vm_endpoint_forgotten worker=%s", name)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("event=forget_failed worker=%s file=%s error=%r", name,
                        SAVED_ENDPOINT_FILE, e.strerror)
        finally:
            os.close(dir_fd)


def _clean_folder(folder: str) -> None:
    """The root-only folder, without anything someone else put there: an older agent made it
    root:guestagent-wire 2770 and let workers write the pair, which they may have kept."""
    ensure_root_dir(folder, 0o700)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, 0o700)
        for name in os.listdir(fd):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if st.st_uid != 0 or not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
                try:
                    os.unlink(name, dir_fd=fd)
                except IsADirectoryError:
                    import shutil
                    shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
                log.warning("event=platform_folder_cleaned removed=%r", name[:64])
    finally:
        os.close(fd)


def ensure(conf, cancel=None) -> str:
    """The folder of a current pair, made if needed (call with _lock held)."""
    folder = folder_of(conf)
    _clean_folder(folder)
    tag = vm_tag(conf)
    if _current(folder, tag):
        return folder
    previous = _kept_tag(folder)
    if previous and previous[0] != tag:
        log.warning("event=vm_id_changed previous=%s current=%s: a new transport key",
                    previous[0][:40], tag)
        _forget_saved_endpoints(conf)
    started = time.monotonic()
    openssl = conf["OS.OpensslPath"]
    if os.path.isabs(openssl) and os.access(openssl, os.X_OK):
        write_pair_with_openssl(openssl, folder, tag, cancel)
        maker, ski = "openssl", "-"   # (the worker logs the SKI it reads off the certificate)
    else:
        # A child that imports cryptography, not the resident supervisor; -I: no PYTHON*
        # variables, no user site, not the current folder.
        _, out = run([sys.executable, "-I", "-m", "supervisor.privileged.transport_key",
                      folder, tag], timeout=GENERATE_TIMEOUT, cancel=cancel)
        maker, ski = "python", (out.split() or ["?"])[-1][:40]
    if not _current(folder, tag):
        raise fail("the transport key was not made")
    log.info("event=transport_key_made vm=%s ski=%s maker=%s seconds=%.2f", tag, ski, maker,
             time.monotonic() - started)
    return folder


def prepare(conf) -> None:
    """At each spawn; the first time for this folder, the folder made root-only and the pair
    made (or checked) in a thread, so that the worker that needs it does not wait for it."""
    folder = folder_of(conf)
    if os.geteuid() != 0:
        first_made.set()   # a developer's non-root run has no broker-held key: the verb fails
        return
    if folder in _prepared:
        return
    _prepared.add(folder)

    def make():   # in a thread: the loop never waits for the lock or an RSA key
        try:
            with _lock:
                ensure(conf)
        except Exception as e:  # noqa: B902 - the verb tries again and answers the error
            log.error("event=transport_key_failed error=%r", str(e)[:300])
        finally:
            first_made.set()
    threading.Thread(target=make, name="transport-key", daemon=True).start()


def transport_key(ctx: Context, args: dict) -> dict:
    with _lock:
        try:
            folder = ensure(ctx.conf, ctx.cancel)
            cert = read_capped(os.path.join(folder, CERT_FILE), MAX_CERT_BYTES)
            # A new open file description per call: each worker's reads have their own offset.
            fd = _root_file(os.path.join(folder, KEY_FILE))
        except OSError as e:
            raise fail("the transport key is unusable: %s" % (e.strerror or e)) from None
    ctx.reply_fds.append(fd)
    return {"certificate": (cert or b"").decode("ascii", "replace")}


# The workers that decrypt (provisioning: SSH certificates; extensions: protectedSettings)
# get the key; monitoring and logcollector never (issue 10 §2).
DECRYPTERS = frozenset(("provisioning", "extensions"))

VERBS = (
    Privileged(P.TRANSPORT_KEY, transport_key, DECRYPTERS, slow=True),
)
