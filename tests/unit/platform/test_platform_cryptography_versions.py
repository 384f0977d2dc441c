"""3DES on every cryptography the project meets: Debian 12's 38 (TripleDES only in
`algorithms`), 43-47 (also in `decrepit`, the old name deprecated) and 48 on (only in
`decrepit`). The client (workers/platform/certificates.py) and the emulator (emulator/cms.py)
must take it from `decrepit` where that exists and never touch the deprecated name.

The check runs in a fresh interpreter with CryptographyDeprecationWarning as an error. On a
cryptography without `decrepit` (this machine's 38), it is run a second time as 48 will be: a
`decrepit` module holding the class, and the old name removed from `algorithms` — a stand-in,
since 48 itself is not installed here."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]

CHECK = r"""
import base64, re, sys, types, warnings
from cryptography.utils import CryptographyDeprecationWarning
warnings.simplefilter("error", CryptographyDeprecationWarning)
from cryptography.hazmat.primitives.ciphers import algorithms
try:
    import cryptography.hazmat.decrepit.ciphers.algorithms  # noqa: F401
    mode = "native"
except ImportError:
    mode = "absent"
if sys.argv[1] == "as-48" and mode == "absent":
    # cryptography's own backend binds the class at import: load it before the name goes
    import cryptography.hazmat.backends.openssl.backend  # noqa: F401
    triple_des = algorithms.TripleDES
    for name in ("cryptography.hazmat.decrepit", "cryptography.hazmat.decrepit.ciphers",
                 "cryptography.hazmat.decrepit.ciphers.algorithms"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["cryptography.hazmat.decrepit.ciphers.algorithms"].TripleDES = triple_des
    del algorithms.TripleDES
    mode = "as-48"

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from emulator import cms, tenant_certs
from workers.platform import certificates as certs
from workers.platform.documents import parse_certificate_file

# the recorded Certificates (3DES content) decrypt with the recorded transport key
wire = "tests/data/walinuxagent/wire/"
key = serialization.load_pem_private_key(open(wire + "trans_prv", "rb").read(), None)
cert = x509.load_pem_x509_certificate(open(wire + "trans_cert", "rb").read())
creds = certs.TransportCredentials(key, cert)
envelope = parse_certificate_file(open(wire + "certs.xml", "rb").read())
assert len(certs.decrypt_certificates(envelope.data, creds)) == 2

# the emulator's 3DES envelope (PKCS#1 v1.5) decrypts with the client
tenant = tenant_certs.generate("t")
pfx = cms.pfx_of([(tenant.key, tenant.cert)])
der = cms.envelope(pfx, cert, cipher="DES_EDE3_CBC")
records = certs.decrypt_certificates(base64.b64encode(der).decode(), creds)
assert [r.thumbprint for r in records] == [tenant.thumbprint]
print(mode)
"""


@pytest.mark.parametrize("how", ["installed", "as-48"])
def test_3des_works_without_the_deprecated_name(how):
    r = subprocess.run([sys.executable, "-c", CHECK, how], cwd=str(ROOT), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    mode = r.stdout.strip()
    assert mode in ("native", "absent", "as-48")
    if how == "as-48":
        assert mode in ("native", "as-48")
