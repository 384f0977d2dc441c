"""The platform verbs: what the workers that talk to the WireServer need from the broker.

`platform.transport_key` is for the workers that decrypt (supervisor/policy.py: provisioning,
for the certificates of SSH keys; extensions, for protectedSettings). Monitoring and the log
collector never decrypt: for them it is a denied verb, a violation.
"""

from ipc.schema import EMPTY, List, Nullable, Obj, Str
from ipc.verbs import declare

CERTIFICATE_PEM = Str(16 * 1024, 64,
                      r"-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?")

TRANSPORT_KEY = declare(
    "platform.transport_key",
    """The transport certificate (PEM; the WireServer encrypts Certificates to it) and its
    private key as a descriptor opened read-only (SCM_RIGHTS) on the broker's root-only copy:
    the worker reads the key from it and keeps it nowhere else. The pair is made once per VM
    id; the first call after a VM id change may wait for a new one.""",
    args=EMPTY,
    result=Obj({"certificate": CERTIFICATE_PEM}),
    timeout=150.0,
    max_fds=1,
)

# A tenant certificate's name: the uppercase SHA-1 of its DER (as `openssl x509 -fingerprint`
# prints it without colons); the broker checks it against the certificate itself.
THUMBPRINT = Str(40, 40, r"[0-9A-F]{40}")
# One certificate in PEM (the same shape the transport certificate has).
TENANT_CERTIFICATE_PEM = CERTIFICATE_PEM
# A tenant private key in PEM: PKCS#8 (what the worker writes), or the traditional RSA / EC forms.
TENANT_KEY_PEM = Str(32 * 1024, 64,
                     r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+"
                     r"-----END (?:RSA |EC )?PRIVATE KEY-----\n?")
MAX_TENANT_CERTIFICATES = 100

INSTALL_CERTIFICATES = declare(
    "platform.install_certificates",
    """The tenant certificates of the current goal state, as the extensions worker decrypted
    them (protocol.md §1.6), installed where extensions read them: Lib.Dir/<THUMBPRINT>.crt and,
    when the bundle has its key, <THUMBPRINT>.prv (root, 0600, written atomically; an entry
    already there is replaced, never followed). The list is the whole set: the files the broker
    wrote earlier (its own record) for a thumbprint not in it are removed, and nothing it did
    not write. Each thumbprint must be the SHA-1 of its certificate: a worker cannot choose a
    file name.""",
    args=Obj({"certificates": List(Obj({
        "thumbprint": THUMBPRINT,
        "certificate": TENANT_CERTIFICATE_PEM,
        "private_key": Nullable(TENANT_KEY_PEM),
    }), MAX_TENANT_CERTIFICATES)}),
    result=Obj({"installed": List(THUMBPRINT, MAX_TENANT_CERTIFICATES),
                "removed": List(THUMBPRINT, 4 * MAX_TENANT_CERTIFICATES)}),
    timeout=60.0,
)
