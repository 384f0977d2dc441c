"""The provisioned user's password hash: crypt(3) from libxcrypt through ctypes.

The stdlib `crypt` module is gone in Python 3.13 (and deprecated before), so this calls
`crypt_rn` of libcrypt.so.1 (libxcrypt, every current distro) or, on a libcrypt without it,
`crypt_r` with a buffer larger than glibc's struct crypt_data. The setting is waagent's:
`$<Provisioning.PasswordCryptId>$<salt>` with `Provisioning.PasswordCryptSaltLength` random
characters of [A-Za-z0-9] (reference/protocol.md §3.4 step 7). Every hash is checked by
hashing the password again with the hash as the setting, through the same library, before
it leaves the worker; only the hash goes to the broker, which applies it on chpasswd's stdin.
"""

import ctypes
import ctypes.util
import re
import secrets
import string
from typing import Optional

SALT_CHARS = string.ascii_letters + string.digits
# The most each method reads (libxcrypt ignores the rest of a longer salt).
MAX_SALT = {"1": 8, "5": 16, "6": 16}
HASH_RE = re.compile(r"\$(1|5|6)\$[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{22,86}")
# libxcrypt's struct crypt_data is 32 KiB; glibc's (older libcrypt) is 128 KiB + a little.
_DATA_SIZE = 256 * 1024
_MAX_PASSWORD_BYTES = 512


class PasswordError(ValueError):
    """The password cannot be hashed (the message never holds it)."""


_lib = None


def _library():
    global _lib
    if _lib is None:
        # The soname first: find_library runs `ldconfig -p` (a process start on the boot's
        # path, issue 17) to find what is libcrypt.so.1 on every current distro.
        try:
            lib = ctypes.CDLL("libcrypt.so.1", use_errno=True)
        except OSError:
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1",
                                  use_errno=True)
            except OSError as e:
                raise PasswordError("libcrypt (libxcrypt) is not installed: %s" % e) from None
        if hasattr(lib, "crypt_rn"):
            lib.crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                                     ctypes.c_int]
            lib.crypt_rn.restype = ctypes.c_char_p
        else:
            lib.crypt_r.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
            lib.crypt_r.restype = ctypes.c_char_p
        _lib = lib
    return _lib


def crypt(password: str, setting: str) -> str:
    """crypt(3): the hash of password with setting (a salt or a whole hash)."""
    phrase = password.encode("utf-8")
    if b"\x00" in phrase:
        raise PasswordError("the password contains a NUL character")
    if len(phrase) > _MAX_PASSWORD_BYTES:
        raise PasswordError("the password is longer than %d bytes" % _MAX_PASSWORD_BYTES)
    lib = _library()
    data = ctypes.create_string_buffer(_DATA_SIZE)
    try:
        if hasattr(lib, "crypt_rn"):
            out = lib.crypt_rn(phrase, setting.encode("ascii"), data, _DATA_SIZE)
        else:
            out = lib.crypt_r(phrase, setting.encode("ascii"), data)
        if not out or out.startswith(b"*"):
            raise PasswordError("crypt(3) refused the setting %s" % setting.split("$")[1:2])
        return out.decode("ascii")
    finally:
        ctypes.memset(data, 0, _DATA_SIZE)


def make_salt(length: int, crypt_id: str) -> str:
    length = max(1, min(length, MAX_SALT.get(crypt_id, 16)))
    return "".join(secrets.choice(SALT_CHARS) for _ in range(length))


def hash_password(password: str, crypt_id: str = "6", salt_length: int = 10,
                  salt: Optional[str] = None) -> str:
    """`$id$salt$hash` for the password, verified before it is returned."""
    if crypt_id not in MAX_SALT:
        raise PasswordError("PasswordCryptId %r is not one of 1, 5, 6" % crypt_id)
    setting = "$%s$%s" % (crypt_id, salt if salt is not None else make_salt(salt_length, crypt_id))
    hashed = crypt(password, setting)
    if not HASH_RE.fullmatch(hashed):
        raise PasswordError("crypt(3) returned an unexpected hash format")
    if not verify(password, hashed):
        raise PasswordError("the hash does not verify with the same library")
    return hashed


def verify(password: str, hashed: str) -> bool:
    try:
        return secrets.compare_digest(crypt(password, hashed), hashed)
    except PasswordError:
        return False
