"""Tenant certificates of a scenario: loaded from PEM files or generated, with their thumbprints."""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from emulator import cms
from emulator.files import read_capped

MAX_PEM_BYTES = 1 << 20


class TenantCert:
    def __init__(self, name, cert, key):
        self.name = name
        self.cert = cert
        self.key = key
        self.thumbprint = cms.thumbprint(cert)

    def cert_pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def key_pem(self):
        if self.key is None:
            return None
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()

    def ssh_public_key(self, comment="emulator"):
        """The OpenSSH form of the certificate's public key (what ovf-env PublicKey/Value carries)."""
        raw = self.cert.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH).decode()
        return "%s %s" % (raw, comment)

    def summary(self):
        return {"name": self.name, "thumbprint": self.thumbprint, "hasPrivateKey": self.key is not None}


def generate(name, common_name=None, key_size=2048):
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or name)])
    now = datetime.datetime.utcnow().replace(microsecond=0)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return TenantCert(name, cert, key)


def load(name, cert_path, key_path=None):
    cert = x509.load_pem_x509_certificate(read_capped(cert_path, MAX_PEM_BYTES))
    key = None
    if key_path:
        key = serialization.load_pem_private_key(read_capped(key_path, MAX_PEM_BYTES), password=None)
    return TenantCert(name, cert, key)
