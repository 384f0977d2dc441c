"""The platform verbs: what the workers that talk to the WireServer need from the broker.

`platform.transport_key` is for the workers that decrypt (supervisor/policy.py: provisioning,
for the certificates of SSH keys; extensions, for protectedSettings). Monitoring and the log
collector never decrypt: for them it is a denied verb, a violation.
"""

from ipc.schema import EMPTY, Obj, Str
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
