"""The tenant certificates of the goal state, installed for extensions (issue 13 §7; protocol.md
§1.6, DESIGN.md "Ownership"): Lib.Dir/<THUMBPRINT>.crt and .prv, root, 0600.

The extensions worker decrypts the Certificates payload and sends every certificate of the
goal state, with its private key when the bundle has one (`platform.install_certificates`).
The broker decides from its own state, not from the worker's words:
- a file name is the SHA-1 of the certificate's DER, computed here (the schema already allows
  only 40 uppercase hex digits, so no `..`, `/` or other name can be asked for); a thumbprint
  that is not its certificate's is refused and nothing is written;
- files are written atomically (temp + fsync + rename in Lib.Dir, which must be root's, not
  writable by anyone else, and not a link; the broker makes it 0700): an entry already there, a symlink included, is replaced, never
  followed or written through;
- the broker keeps its own record of what it wrote (`<Agent.StateDir>/platform/`, root 0700)
  and removes only recorded files whose thumbprint left the goal state: never a file it did
  not write (waagent's, provisioning's, anything else in Lib.Dir). The record is widened before
  a file is written and narrowed after the removals, so a crash midway forgets nothing.

The supervisor does not parse certificates (it never imports cryptography): the PEM body is
base64 and its SHA-1 is the thumbprint; that the key is the certificate's is the worker's
business (a wrong one only breaks that extension's own decryption).
"""

import base64
import binascii
import json
import logging
import os
import re
import stat
import threading

from ipc.verbs import platform as P
from supervisor.broker import Context, Privileged
from supervisor.privileged import atomic_write, ensure_root_dir, fail, lib_dir, read_capped

log = logging.getLogger("guestagent.broker.certificates")

RECORD_FOLDER = "platform"
RECORD_FILE = "TenantCertificates.json"
MAX_RECORD_BYTES = 64 * 1024
CERT_SUFFIX, KEY_SUFFIX = ".crt", ".prv"
_THUMBPRINT = re.compile(r"[0-9A-F]{40}")
_PEM_BODY = re.compile(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", re.S)

# One install at a time: the record is read, widened, narrowed by one caller.
_lock = threading.Lock()

# The extensions worker decrypts protectedSettings' certificates; nobody else installs them.
CALLERS = frozenset(("extensions",))


def thumbprint_of_pem(pem: str) -> str:
    """Uppercase SHA-1 hex of the certificate's DER, from its PEM body."""
    match = _PEM_BODY.search(pem or "")   # the schema allowed one block, nothing around it
    if match is None:
        raise fail("not a PEM certificate")
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise fail("the certificate's PEM body is not base64") from None
    if len(der) < 64 or der[0] != 0x30:
        raise fail("the certificate is not DER")
    try:
        # CPython's own SHA-1: hashlib's would map libcrypto into the resident supervisor
        # (+0.5 MiB private, ~1 MiB PSS in the VM's idle tree) for one digest per goal state.
        from _sha1 import sha1
    except ImportError:    # a build without it (FIPS-minded): the OpenSSL one
        from hashlib import sha1
    return sha1(der).hexdigest().upper()


def _record_path(conf) -> str:
    return os.path.join(conf["Agent.StateDir"], RECORD_FOLDER, RECORD_FILE)


def read_record(conf) -> dict:
    """{thumbprint: has .prv} of the files the broker wrote; {} if none or unreadable."""
    try:
        data = read_capped(_record_path(conf), MAX_RECORD_BYTES)
    except Exception as e:  # noqa: B902 - an unusable record removes nothing, logged
        log.warning("event=certificate_record_unreadable error=%r", str(e)[:200])
        return {}
    if data is None:
        return {}
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError:
        log.warning("event=certificate_record_malformed")
        return {}
    if not isinstance(doc, dict):
        return {}
    return {tp: bool(has_key) for tp, has_key in doc.items()
            if isinstance(tp, str) and _THUMBPRINT.fullmatch(tp)}


def _write_record(conf, record: dict) -> None:
    folder = os.path.dirname(_record_path(conf))
    ensure_root_dir(folder, 0o700)
    atomic_write(_record_path(conf), json.dumps(record, sort_keys=True).encode(), 0o600)


def _open_lib(conf) -> int:
    """A descriptor of Lib.Dir: root's, writable by nobody else, never a link."""
    folder = lib_dir(conf)          # made root 0700 if missing; refuses a link or a foreign owner
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o022:
        os.close(fd)
        raise fail("%s is not root's alone: no certificate is written there" % folder)
    return fd


def _remove(dir_fd: int, name: str) -> bool:
    """Unlink one entry of Lib.Dir (unlink never follows the last component)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        log.warning("event=certificate_not_removed name=%s reason=folder", name)
        return False
    os.unlink(name, dir_fd=dir_fd)
    return True


def install_certificates(ctx: Context, args: dict) -> dict:
    wanted = {}
    for item in args["certificates"]:
        tp = item["thumbprint"]
        if thumbprint_of_pem(item["certificate"]) != tp:
            raise fail("thumbprint %s is not the SHA-1 of its certificate: nothing written" % tp)
        if tp in wanted and wanted[tp] != item:
            raise fail("thumbprint %s given twice, differently: nothing written" % tp)
        wanted[tp] = item
    with _lock:
        dir_fd = _open_lib(ctx.conf)
        try:
            folder = ctx.conf["Lib.Dir"]
            record = read_record(ctx.conf)
            # Widen first: whatever is written below is on record before it exists.
            widened = dict(record)
            for tp, item in wanted.items():
                widened[tp] = widened.get(tp, False) or item["private_key"] is not None
            if widened != record:
                _write_record(ctx.conf, widened)
            for tp, item in sorted(wanted.items()):
                atomic_write(os.path.join(folder, tp + CERT_SUFFIX),
                             item["certificate"].encode("ascii"), 0o600)
                if item["private_key"] is not None:
                    atomic_write(os.path.join(folder, tp + KEY_SUFFIX),
                                 item["private_key"].encode("ascii"), 0o600)
            removed = []
            final = {}
            for tp, had_key in sorted(widened.items()):
                item = wanted.get(tp)
                if item is None:
                    gone = _remove(dir_fd, tp + CERT_SUFFIX)
                    if had_key:
                        gone = _remove(dir_fd, tp + KEY_SUFFIX) or gone
                    if gone:
                        removed.append(tp)
                    continue
                if had_key and item["private_key"] is None:
                    _remove(dir_fd, tp + KEY_SUFFIX)    # ours, and no longer in the bundle
                final[tp] = item["private_key"] is not None
            if final != widened:
                _write_record(ctx.conf, final)
        except OSError as e:
            raise fail("installing the certificates failed: %s" % (e.strerror or e)) from None
        finally:
            os.close(dir_fd)
    log.info("event=certificates_installed count=%d removed=%d thumbprints=%s",
             len(wanted), len(removed), ",".join(sorted(wanted))[:2000])
    return {"installed": sorted(wanted), "removed": removed}


VERBS = (
    Privileged(P.INSTALL_CERTIFICATES, install_certificates, CALLERS, slow=True),
)
