"""Tenant certificate records and their hand-over to the broker (DESIGN.md §Certificates).

Apart from workers/platform/certificates.py, which decrypts them with cryptography and
asn1crypto (~20 MiB of libraries): the resident extensions worker imports only this module, and
decrypts in a short-lived fork (launch/forked.py) whose libraries leave with it (issue 17).
"""

import logging
import os
from typing import List, NamedTuple, Optional, Tuple

from workers.platform.errors import CertificateError

log = logging.getLogger("workers.platform.certificates")

# Ciphers the WireServer is asked for, in order (FIPS hosts refuse 3DES).
CIPHER_AES128 = "AES128_CBC"
CIPHER_3DES = "DES_EDE3_CBC"
CIPHERS = (CIPHER_AES128, CIPHER_3DES)


class CertificateRecord(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    """One tenant certificate: what the broker installs as <thumbprint>.crt / .prv."""
    thumbprint: str                 # uppercase SHA-1 hex of the DER certificate
    certificate_pem: str
    private_key_pem: Optional[str]  # PKCS#8 PEM, None when the bundle has no key for it

    @property
    def has_private_key(self) -> bool:
        return self.private_key_pem is not None

    def summary(self) -> dict:
        """What waagent keeps as Certificates.json: no key material."""
        return {"thumbprint": self.thumbprint, "hasPrivateKey": self.has_private_key}

    def __repr__(self):  # never a key in a log line
        return "CertificateRecord(%s, key=%s)" % (self.thumbprint, self.has_private_key)


def transport_descriptor(worker) -> Tuple[int, str]:
    """The broker's read-only descriptor of the transport key and the certificate's PEM
    (`platform.transport_key`: only provisioning and extensions may ask; for any other worker
    the verb is a violation that ends it). The key is not read here: certificates.py loads it,
    in whichever process decrypts."""
    result, fds = worker.call("platform.transport_key", {})
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise CertificateError("the broker sent %d descriptors for the transport key"
                               % len(fds))
    return fds[0], result["certificate"]


def install_for_extensions(worker, records: List[CertificateRecord]) -> Tuple[List[str], List[str]]:
    """Hand the goal state's tenant certificates to the broker, which writes them where
    extensions read them: Lib.Dir/<THUMBPRINT>.crt and .prv (root, 0600), and removes those it
    wrote earlier for thumbprints no longer given (`platform.install_certificates`; only the
    extensions worker may call it).

    `records` is the whole set of the current goal state (what PlatformClient.certificates()
    returns): call it whenever that set changes, after a restart of the worker too (the call
    is idempotent); an empty list removes every certificate the broker installed. Returns
    (installed thumbprints, removed thumbprints). Raises CertificateError (a PlatformError)
    when the broker could not install them (FAILED: e.g. a full disk, or a record whose
    thumbprint is not its certificate's)."""
    from ipc.errors import FAILED, IpcError   # lazily: only the extensions worker calls this
    certificates = []
    for record in records:
        certificates.append({"thumbprint": record.thumbprint,
                             "certificate": record.certificate_pem,
                             "private_key": record.private_key_pem})
    try:
        result, fds = worker.call("platform.install_certificates",
                                  {"certificates": certificates})
    except IpcError as e:
        if e.code != FAILED:
            raise
        raise CertificateError("the broker did not install the certificates: %s"
                               % e.message) from None
    for fd in fds:
        os.close(fd)
    log.info("tenant certificates installed: %s; removed: %s",
             ", ".join(result["installed"]) or "none", ", ".join(result["removed"]) or "none")
    return result["installed"], result["removed"]
