"""Certificates: certs.xml decrypts with trans_prv to what openssl finds; AES-128 and 3DES envelopes
and PBES2 / PBE-SHA1-3DES bundles made by openssl decrypt the same; the transport pair loads from
the broker's descriptor.

openssl is the test oracle only: the code under test never runs it."""

import base64
import os
import re
import shutil
import subprocess

import pytest
from asn1crypto import cms as a_cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from supervisor.privileged import transport_key
from workers.platform import certificates as certs
from workers.platform.documents import parse_certificate_file
from workers.platform.errors import CertificateError

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl (the oracle) is not installed")


def fixture_creds(wire):
    key = serialization.load_pem_private_key((wire / "trans_prv").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((wire / "trans_cert").read_bytes())
    return certs.TransportCredentials(key, cert)


def openssl(*args, data=None):
    return subprocess.run([OPENSSL, *args], input=data, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, check=True, timeout=60).stdout


def oracle_pem(pfx_path):
    """What `openssl pkcs12 -nodes` finds: {thumbprint: key public DER or None}."""
    pem = openssl("pkcs12", "-in", str(pfx_path), "-nodes", "-passin", "pass:").decode()
    cert_blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)
    key_blocks = re.findall(r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----.*?-----END (?:RSA |EC )?PRIVATE KEY-----",
                            pem, re.S)
    keys = [serialization.load_pem_private_key(k.encode(), None) for k in key_blocks]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    found = {}
    for block in cert_blocks:
        fp = openssl("x509", "-noout", "-fingerprint", "-sha1", data=block.encode()).decode()
        tp = fp.strip().split("=", 1)[1].replace(":", "").upper()
        cert = x509.load_pem_x509_certificate(block.encode())
        pub = cert.public_key().public_bytes(der, spki)
        found[tp] = pub if any(k.public_key().public_bytes(der, spki) == pub for k in keys) else None
    return found


def ours(records):
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    result = {}
    for r in records:
        cert = x509.load_pem_x509_certificate(r.certificate_pem.encode())
        pub = cert.public_key().public_bytes(der, spki)
        if r.private_key_pem:
            key = serialization.load_pem_private_key(r.private_key_pem.encode(), None)
            assert key.public_key().public_bytes(der, spki) == pub
            assert r.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")
        result[r.thumbprint] = pub if r.private_key_pem else None
    return result


def test_fixture_certs_decrypt(fixtures_dir):
    wire = fixtures_dir / "wire"
    envelope = parse_certificate_file((wire / "certs.xml").read_bytes())
    records = certs.decrypt_certificates(envelope.data, fixture_creds(wire))
    assert [r.thumbprint for r in records] == ["F6ABAA61098A301EBB8A571C3C7CF77F355F7FA9",
                                               "8979F1AC8C4215827BF3B5A403E6137B504D02A4"]
    assert [r.has_private_key for r in records] == [True, False]
    assert records[0].summary() == {"thumbprint": records[0].thumbprint, "hasPrivateKey": True}
    assert "PRIVATE" not in repr(records)


@needs_openssl
def test_fixture_certs_match_openssl(fixtures_dir, tmp_path):
    wire = fixtures_dir / "wire"
    envelope = parse_certificate_file((wire / "certs.xml").read_bytes())
    p7 = tmp_path / "certs.p7m"
    p7.write_bytes(base64.b64decode(envelope.data))
    pfx = openssl("cms", "-decrypt", "-inform", "DER", "-in", str(p7), "-inkey",
                  str(wire / "trans_prv"), "-recip", str(wire / "trans_cert"))
    (tmp_path / "certs.pfx").write_bytes(pfx)
    expected = oracle_pem(tmp_path / "certs.pfx")
    assert ours(certs.decrypt_certificates(envelope.data, fixture_creds(wire))) == expected


def test_incorrect_certs_are_not_for_us(fixtures_dir):
    wire = fixtures_dir / "wire"
    envelope = parse_certificate_file((wire / "incorrect-certs.xml").read_bytes())
    with pytest.raises(CertificateError, match="not addressed"):
        certs.decrypt_certificates(envelope.data, fixture_creds(wire))


@pytest.mark.parametrize("data", ["not base64!", base64.b64encode(b"\x30\x03\x02\x01\x01").decode(),
                                  base64.b64encode(os.urandom(64)).decode()])
def test_garbage_payloads(fixtures_dir, data):
    with pytest.raises(CertificateError):
        certs.decrypt_certificates(data, fixture_creds(fixtures_dir / "wire"))


def test_tampered_ciphertext(fixtures_dir):
    wire = fixtures_dir / "wire"
    envelope = parse_certificate_file((wire / "certs.xml").read_bytes())
    der = bytearray(base64.b64decode(envelope.data))
    der[-20] ^= 0xFF
    with pytest.raises(CertificateError):
        certs.decrypt_certificates(base64.b64encode(bytes(der)).decode(), fixture_creds(wire))


def make_tenant(tmp_path, name):
    key, cert = tmp_path / (name + ".key"), tmp_path / (name + ".crt")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "2", "-subj", "/CN=" + name)
    return key, cert


@needs_openssl
@pytest.mark.parametrize("cipher", ["-aes128", "-des3"])
@pytest.mark.parametrize("pbe", [[], ["-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES"]])
# Azure wraps the AES128_CBC content key with RSAES-OAEP (SHA-1, MGF1-SHA1), 3DES's with v1.5.
@pytest.mark.parametrize("wrap", [[], ["-keyopt", "rsa_padding_mode:oaep"]], ids=["pkcs1", "oaep"])
def test_openssl_made_envelopes(tmp_path, cipher, pbe, wrap):
    creds = made_pair()
    transport_pem = tmp_path / "transport.pem"
    transport_pem.write_bytes(creds.certificate.public_bytes(serialization.Encoding.PEM))
    key1, cert1 = make_tenant(tmp_path, "one")
    _, cert2 = make_tenant(tmp_path, "two")
    pfx = tmp_path / "bundle.pfx"
    openssl("pkcs12", "-export", "-inkey", str(key1), "-in", str(cert1), "-certfile", str(cert2),
            "-passout", "pass:", "-out", str(pfx), *pbe)
    der = openssl("cms", "-encrypt", "-binary", cipher, "-keyid", "-in", str(pfx), "-outform", "DER",
                  "-recip", str(transport_pem), *wrap)
    wrapped = a_cms.ContentInfo.load(der)["content"]["recipient_infos"][0].chosen
    assert wrapped["key_encryption_algorithm"]["algorithm"].native == \
        ("rsaes_oaep" if wrap else "rsaes_pkcs1v15")
    records = certs.decrypt_certificates(base64.b64encode(der).decode(), creds)
    assert ours(records) == oracle_pem(pfx)
    assert sorted(r.has_private_key for r in records) == [False, True]


def made_pair():
    """A pair as the broker's key maker makes it (supervisor/privileged/transport_key.py)."""
    key, cert = transport_key.generate()
    return certs.TransportCredentials(key, cert)


def key_fd(tmp_path, creds, flags=os.O_RDONLY):
    key_pem, _ = transport_key.pem_pair(creds.key, creds.certificate)
    path = tmp_path / "key.pem"
    path.write_bytes(key_pem)
    return os.open(str(path), flags)


def cert_pem(creds):
    return creds.certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_the_made_pair_is_what_the_wireserver_needs():
    creds = made_pair()
    cert = creds.certificate
    assert cert.subject.rfc4514_string() == "CN=LinuxTransport"
    assert creds.key.key_size == 2048
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert creds.subject_key_identifier == ski
    after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
    before = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before
    assert (after - before).days >= 730
    assert base64.b64decode(creds.header_value) == cert.public_bytes(serialization.Encoding.DER)


def test_the_pair_loads_from_the_brokers_descriptor_which_is_closed(tmp_path):
    creds = made_pair()
    fd = key_fd(tmp_path, creds)
    os.read(fd, 10)    # an offset moved by someone else does not matter (pread)
    loaded = certs.load_transport(fd, cert_pem(creds))
    assert loaded.subject_key_identifier == creds.subject_key_identifier
    assert loaded.key.private_numbers() == creds.key.private_numbers()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path):
    with pytest.raises(CertificateError, match="do not match"):
        certs.load_transport(key_fd(tmp_path, made_pair()), cert_pem(made_pair()))


@pytest.mark.parametrize("content", [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\n" * 5000])
def test_a_bad_key_is_a_clear_error(tmp_path, content):
    (tmp_path / "bad").write_bytes(content)
    with pytest.raises(CertificateError, match="transport key"):
        certs.load_transport(os.open(str(tmp_path / "bad"), os.O_RDONLY), cert_pem(made_pair()))


class FakeWorker:
    """The worker's call(): the reply the broker gives, descriptors included."""

    def __init__(self, result, fds):
        self.reply = (result, fds)
        self.calls = []

    def call(self, verb, args):
        self.calls.append(verb)
        return self.reply


def test_from_broker_asks_the_verb_and_loads_the_descriptor(tmp_path):
    creds = made_pair()
    worker = FakeWorker({"certificate": cert_pem(creds)}, [key_fd(tmp_path, creds)])
    loaded = certs.from_broker(worker)
    assert worker.calls == ["platform.transport_key"]
    assert loaded.subject_key_identifier == creds.subject_key_identifier


def test_from_broker_refuses_a_reply_without_one_descriptor(tmp_path):
    creds = made_pair()
    extra = [key_fd(tmp_path, creds), key_fd(tmp_path, creds)]
    with pytest.raises(CertificateError, match="2 descriptors"):
        certs.from_broker(FakeWorker({"certificate": cert_pem(creds)}, extra))
    for fd in extra:   # closed, not leaked
        with pytest.raises(OSError):
            os.fstat(fd)


# ---- no RSA key check on the boot's path (issue 17) -------------------------------------------
# cryptography checks every RSA private key it loads (OpenSSL 3's primality tests of p and q):
# ~40 ms of CPU a key here, over a second each under TCG, and provisioning loaded two, the
# transport key and the tenant's. Neither is checked now (benchmarks/README.md, issue 17).

def _with_bad_coefficient(key):
    """The key's PKCS#8 PEM with its CRT coefficient changed: whole and well-formed, with the
    certificate's public half, but a key OpenSSL's check refuses."""
    from asn1crypto import keys as a_keys
    info = a_keys.PrivateKeyInfo.load(key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    fields = info["private_key"].parsed
    rsa_der = a_keys.RSAPrivateKey(dict(fields.native, coefficient=fields["coefficient"].native + 2))
    bad = a_keys.PrivateKeyInfo({"version": 0, "private_key_algorithm": {"algorithm": "rsa"},
                                 "private_key": rsa_der})
    body = base64.encodebytes(bad.dump()).decode()
    return ("-----BEGIN PRIVATE KEY-----\n%s-----END PRIVATE KEY-----\n" % body).encode()


def test_the_transport_key_is_loaded_without_the_rsa_check_on_this_cryptography(tmp_path):
    creds = made_pair()
    pem = _with_bad_coefficient(creds.key)
    with pytest.raises(ValueError):   # what the check would say: so it is not run below
        serialization.load_pem_private_key(pem, None)
    (tmp_path / "key.pem").write_bytes(pem)
    loaded = certs.load_transport(os.open(str(tmp_path / "key.pem"), os.O_RDONLY), cert_pem(creds))
    assert loaded.key.public_key().public_numbers() == creds.key.public_key().public_numbers()
    # The switch is set for that one load only: every other key is still checked.
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, None)


@needs_openssl
def test_a_tenant_key_is_handed_on_as_it_came_whole_and_unchecked(tmp_path):
    key_path, cert_path = make_tenant(tmp_path, "one")
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    pfx = tmp_path / "bundle.pfx"
    openssl("pkcs12", "-export", "-inkey", str(key_path), "-in", str(cert_path), "-passout",
            "pass:", "-out", str(pfx))
    [record] = certs.read_pkcs12(pfx.read_bytes())
    # The PEM is the one cryptography wrote before (PKCS#8, 64-column lines).
    assert record.private_key_pem == key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    # A key OpenSSL's check would refuse is still paired with its certificate and handed on.
    bad = tmp_path / "bad.key"
    bad.write_bytes(_with_bad_coefficient(key))
    openssl("pkcs12", "-export", "-inkey", str(bad), "-in", str(cert_path), "-passout", "pass:",
            "-out", str(pfx))
    [record] = certs.read_pkcs12(pfx.read_bytes())
    assert record.private_key_pem.encode().replace(b"\n", b"") == \
        bad.read_bytes().replace(b"\n", b"")


def test_a_malformed_tenant_key_is_a_clear_error():
    # A bundle (made here: no tool writes one) whose key bag says RSA and holds no RSA key.
    from asn1crypto import keys as a_keys
    from asn1crypto import pkcs12 as a_pkcs12
    body = b"\x02\x01\x00" + bytes.fromhex("300d06092a864886f70d0101010500") + b"\x04\x03\x01\x02\x03"
    key = a_keys.PrivateKeyInfo.load(b"\x30" + bytes([len(body)]) + body)
    safe = a_pkcs12.SafeContents([a_pkcs12.SafeBag({"bag_id": "key_bag", "bag_value": key})])
    inner = a_cms.ContentInfo({"content_type": "data", "content": safe.dump()})
    outer = a_cms.ContentInfo({"content_type": "data",
                                "content": a_pkcs12.AuthenticatedSafe([inner]).dump()})
    pfx = a_pkcs12.Pfx({"version": "v3", "auth_safe": outer})
    with pytest.raises(CertificateError, match="malformed"):
        certs.read_pkcs12(pfx.dump())
