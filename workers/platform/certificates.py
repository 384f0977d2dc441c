"""The transport key and certificate, and the Certificates payload (protocol.md §1.6,
DESIGN.md §Certificates).

Transport: RSA 2048, self-signed `CN=LinuxTransport`, with a SubjectKeyIdentifier (the
WireServer names the CMS recipient by it). The broker holds it (supervisor/privileged/
platform.py: made once per VM id, root-only) and hands it to the workers that decrypt —
provisioning and extensions — as a read-only descriptor (`platform.transport_key`); they load
it into memory and never write it. No worker makes, keeps or shares a key.

Certificates: the WireServer's CMS EnvelopedData is parsed with asn1crypto; the content key is
decrypted with RSAES-OAEP (what Azure sends when AES128_CBC is asked) or RSA PKCS#1 v1.5 (3DES,
older hosts), and the content with 3DES-CBC or AES-CBC (cryptography
primitives); the PKCS#12 inside is read bag by bag (every key and certificate, empty password,
PBE-SHA1-3DES or PBES2), with cryptography's loader as the fallback. No openssl subprocess.
The result is a list of CertificateRecord that the broker installs as <TP>.crt / <TP>.prv.
"""

import base64
import hashlib
import hmac
import logging
import os
import threading
from typing import List, NamedTuple, Optional, Tuple

from asn1crypto import cms as a_cms
from asn1crypto import pkcs12 as a_pkcs12
from asn1crypto import keys as a_keys
from asn1crypto import pem as a_pem
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12

from workers.platform.errors import CertificateError
# The records and their hand-over to the broker need no cryptography: they live apart, so the
# resident extensions worker can install what a short-lived fork decrypted (issue 17).
from workers.platform.certificate_records import (CIPHER_3DES, CIPHER_AES128, CIPHERS,
                                                   CertificateRecord, install_for_extensions,
                                                   transport_descriptor)

try:  # cryptography >= 43 keeps 3DES in "decrepit"; the old name is deprecated, then gone.
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - Debian 12's cryptography 38
    TripleDES = algorithms.TripleDES

log = logging.getLogger(__name__)

# A PKCS#8 PEM of an RSA 2048 key is under 2 KiB.
MAX_KEY_BYTES = 64 * 1024

# A Certificates payload is tens of KiB; far more is not a certificate bundle.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
MAX_BAGS = 256


# --- Transport credentials ---------------------------------------------------------------------

class TransportCredentials(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def header_value(self) -> str:
        """x-ms-guest-agent-public-x509-cert: base64 DER, no PEM lines or newlines."""
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return base64.b64encode(der).decode("ascii")

    @property
    def subject_key_identifier(self) -> bytes:
        return _subject_key_identifier(self.certificate)

    def __repr__(self):
        return "TransportCredentials(ski=%s)" % self.subject_key_identifier.hex()


def _subject_key_identifier(cert: x509.Certificate) -> bytes:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ext.value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _public_der(key_or_cert) -> bytes:
    public = key_or_cert.public_key()
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def load_transport(key_fd: int, certificate_pem: str) -> TransportCredentials:
    """The pair from the broker (`platform.transport_key`): the key read from the read-only
    descriptor it sent (which is closed here), the certificate from its reply. The key stays
    in this process's memory only: it is never written anywhere."""
    try:
        chunks, total = [], 0
        while True:   # pread: the offset of a shared description is nobody's business
            chunk = os.pread(key_fd, MAX_KEY_BYTES + 1 - total, total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_KEY_BYTES:
                raise CertificateError("the transport key is larger than %d bytes"
                                       % MAX_KEY_BYTES)
    except OSError as e:
        raise CertificateError("cannot read the transport key: %s" % e.strerror) from None
    finally:
        os.close(key_fd)
    try:
        key = _load_own_key(b"".join(chunks))
        cert = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeError) as e:
        raise CertificateError("the transport key or certificate does not load: %s"
                               % type(e).__name__) from None
    if not isinstance(key, rsa.RSAPrivateKey) or _public_der(key) != _public_der(cert):
        raise CertificateError("the transport key and certificate do not match")
    return TransportCredentials(key, cert)


def _load_own_key(pem: bytes):
    """The transport key without cryptography's RSA key check (OpenSSL 3's primality tests of
    p and q): ~40 ms of CPU natively, 1.3 s on the boot's path under TCG (issue 17), and no
    use for a key the broker made this boot. The key must still be the certificate's (the
    caller compares them). cryptography 39 on has a switch for it; 38 (Debian 12) has the
    same switch on its backend, which its own tests set, and which is set here only for this
    one load, under a lock (where neither exists, the key is loaded and checked)."""
    try:
        return serialization.load_pem_private_key(pem, password=None,
                                                  unsafe_skip_rsa_key_validation=True)
    except TypeError:   # cryptography < 39: no such argument
        pass
    from cryptography.hazmat.backends.openssl.backend import backend
    if not hasattr(backend, "_rsa_skip_check_key"):
        return serialization.load_pem_private_key(pem, password=None)
    with _SKIP_CHECK_LOCK:
        backend._rsa_skip_check_key = True
        try:
            return serialization.load_pem_private_key(pem, password=None)
        finally:
            backend._rsa_skip_check_key = False


_SKIP_CHECK_LOCK = threading.Lock()


def from_broker(worker) -> TransportCredentials:
    """Ask the broker for the pair (only provisioning and extensions may: for any other
    worker the verb is a violation that ends it)."""
    creds = load_transport(*transport_descriptor(worker))
    log.info("transport certificate from the broker (SKI %s)",
             creds.subject_key_identifier.hex())
    return creds


# --- Thumbprints ---------------------------------------------------------------------------------

def thumbprint_of(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()



# --- CMS EnvelopedData --------------------------------------------------------------------------

def _unpad(data: bytes, block_bits: int) -> bytes:
    unpadder = sym_padding.PKCS7(block_bits).unpadder()
    return unpadder.update(data) + unpadder.finalize()


def _content_cipher(algorithm: str, key: bytes, iv: bytes):
    """(Cipher, block bits) for a CMS / PKCS#5 content encryption algorithm name."""
    if algorithm in ("tripledes_3key", "des_ede3_cbc", "pkcs12_sha1_tripledes_3key"):
        return Cipher(TripleDES(key), modes.CBC(iv)), 64
    if algorithm in ("aes128_cbc", "aes192_cbc", "aes256_cbc"):
        expected = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}[algorithm]
        if len(key) != expected:
            raise CertificateError("%s content key of %d bytes" % (algorithm, len(key)))
        return Cipher(algorithms.AES(key), modes.CBC(iv)), 128
    raise CertificateError("unsupported content encryption %s" % algorithm)


_OAEP_HASHES = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
                "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def _key_padding(algorithm):
    """The RSA padding that wraps the content key: PKCS#1 v1.5, or RSAES-OAEP — what Azure
    sends for AES128_CBC (SHA-1 and MGF1-SHA1, the RFC 3560 defaults, parameters absent or
    empty); other OAEP hashes are read as named."""
    name = algorithm["algorithm"].native
    if name == "rsaes_pkcs1v15":
        return padding.PKCS1v15()
    if name != "rsaes_oaep":
        raise CertificateError("unsupported key encryption %s" % name)
    try:
        params = algorithm["parameters"]
        if params.native is None:          # absent: every default
            hash_name, mgf_name, mgf_hash, label = "sha1", "mgf1", "sha1", b""
        else:
            hash_name = params["hash_algorithm"]["algorithm"].native
            mgf = params["mask_gen_algorithm"]
            mgf_name = mgf["algorithm"].native
            mgf_hash = mgf["parameters"]["algorithm"].native
            source = params["p_source_algorithm"]
            label = source["parameters"].native or b""
            if source["algorithm"].native != "p_specified":
                raise CertificateError("OAEP label source %s" % source["algorithm"].native)
    except CertificateError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise CertificateError("unreadable OAEP parameters: %s" % type(e).__name__) from None
    if mgf_name != "mgf1" or hash_name not in _OAEP_HASHES or mgf_hash not in _OAEP_HASHES:
        raise CertificateError("unsupported OAEP parameters (%s, %s %s)"
                               % (hash_name, mgf_name, mgf_hash))
    return padding.OAEP(mgf=padding.MGF1(_OAEP_HASHES[mgf_hash]()),
                        algorithm=_OAEP_HASHES[hash_name](), label=label or None)


def _recipient_matches(rid, creds: TransportCredentials) -> bool:
    if rid.name == "subject_key_identifier":
        return rid.chosen.native == creds.subject_key_identifier
    if rid.name == "issuer_and_serial_number":
        cert = creds.certificate
        return (rid.chosen["serial_number"].native == cert.serial_number and
                rid.chosen["issuer"].dump() == cert.issuer.public_bytes())
    return False


def decrypt_envelope(der: bytes, creds: TransportCredentials) -> bytes:
    """The plaintext of a CMS EnvelopedData addressed to the transport certificate."""
    try:
        info = a_cms.ContentInfo.load(der)
        if info["content_type"].native != "enveloped_data":
            raise CertificateError("CMS content is %s, not enveloped data"
                                   % info["content_type"].native)
        envelope = info["content"]
        recipients = [r.chosen for r in envelope["recipient_infos"] if r.name == "ktri"]
        content = envelope["encrypted_content_info"]
        algorithm = content["content_encryption_algorithm"]
        algorithm_name = algorithm["algorithm"].native
        iv = algorithm.encryption_iv
        ciphertext = content["encrypted_content"].native
    except CertificateError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise CertificateError("the Certificates payload is not CMS: %s" % type(e).__name__) \
            from None
    if not recipients:
        raise CertificateError("the CMS envelope has no key-transport recipient")
    if ciphertext is None:
        raise CertificateError("the CMS envelope has no encrypted content")
    mine = [r for r in recipients if _recipient_matches(r["rid"], creds)]
    if not mine:
        raise CertificateError("the CMS envelope is not addressed to our transport certificate "
                               "(SKI %s)" % creds.subject_key_identifier.hex())
    recipient = mine[0]
    key_padding = _key_padding(recipient["key_encryption_algorithm"])
    try:
        content_key = creds.key.decrypt(recipient["encrypted_key"].native, key_padding)
    except ValueError:
        raise CertificateError("the content key does not decrypt with the transport key") \
            from None
    cipher, block_bits = _content_cipher(algorithm_name, content_key, iv)
    if len(ciphertext) % (block_bits // 8):
        raise CertificateError("the encrypted content is not whole blocks")
    decryptor = cipher.decryptor()
    try:
        return _unpad(decryptor.update(ciphertext) + decryptor.finalize(), block_bits)
    except ValueError:
        raise CertificateError("the content does not decrypt (bad padding)") from None


# --- PKCS#12 ----------------------------------------------------------------------------------

def _pkcs12_kdf(password_bmp: bytes, salt: bytes, iterations: int, purpose: int,
                length: int, hash_name: str = "sha1") -> bytes:
    """RFC 7292 appendix B.2 (purpose 1: key, 2: IV, 3: MAC key)."""
    u = hashlib.new(hash_name).digest_size
    v = hashlib.new(hash_name).block_size

    def fill(b: bytes) -> bytes:
        if not b:
            return b""
        n = v * ((len(b) + v - 1) // v)
        return (b * (n // len(b) + 1))[:n]

    diversifier = bytes([purpose]) * v
    block = bytearray(fill(salt) + fill(password_bmp))
    out = b""
    while len(out) < length:
        a = diversifier + bytes(block)
        for _ in range(iterations):
            a = hashlib.new(hash_name, a).digest()
        out += a
        b = int.from_bytes((a * (v // u + 1))[:v], "big") + 1
        for j in range(0, len(block), v):
            chunk = (int.from_bytes(block[j:j + v], "big") + b) % (1 << (8 * v))
            block[j:j + v] = chunk.to_bytes(v, "big")
    return out[:length]


# The empty password as Windows (BMPString with terminator) and as some tools (nothing) write it.
_EMPTY_PASSWORDS_BMP = (b"\x00\x00", b"")
_EMPTY_PASSWORDS_PBES2 = (b"",)
_MAX_ITERATIONS = 1_000_000


class _Unsupported(Exception):
    """An algorithm this reader does not do: let cryptography's loader try the bundle."""


def _pbe_decrypt(algorithm, data: bytes) -> bytes:
    name = algorithm["algorithm"].native
    if name == "pkcs12_sha1_tripledes_3key":
        params = algorithm["parameters"]
        salt, iterations = params["salt"].native, params["iterations"].native
        if not 0 < iterations <= _MAX_ITERATIONS:
            raise CertificateError("PKCS#12 iteration count %r" % iterations)
        for password in _EMPTY_PASSWORDS_BMP:
            key = _pkcs12_kdf(password, salt, iterations, 1, 24)
            iv = _pkcs12_kdf(password, salt, iterations, 2, 8)
            decryptor = Cipher(TripleDES(key), modes.CBC(iv)).decryptor()
            try:
                return _unpad(decryptor.update(data) + decryptor.finalize(), 64)
            except ValueError:
                continue
        raise CertificateError("a PKCS#12 bag does not decrypt with the empty password")
    if name == "pbes2":
        params = algorithm["parameters"]
        kdf = params["key_derivation_func"]
        if kdf["algorithm"].native != "pbkdf2":
            raise _Unsupported(kdf["algorithm"].native)
        kdf_params = kdf["parameters"]
        iterations = kdf_params["iteration_count"].native
        if not 0 < iterations <= _MAX_ITERATIONS:
            raise CertificateError("PBKDF2 iteration count %r" % iterations)
        prf = kdf_params["prf"]["algorithm"].native
        hash_cls = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
                    "sha384": hashes.SHA384, "sha512": hashes.SHA512}.get(prf)
        if hash_cls is None:
            raise _Unsupported(prf)
        scheme = params["encryption_scheme"]
        scheme_name = scheme["algorithm"].native
        key_length = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32,
                      "tripledes_3key": 24}.get(scheme_name)
        if key_length is None:
            raise _Unsupported(scheme_name)
        for password in _EMPTY_PASSWORDS_PBES2:
            key = PBKDF2HMAC(hash_cls(), key_length, kdf_params["salt"].native,
                             iterations).derive(password)
            cipher, bits = _content_cipher(scheme_name, key, scheme.encryption_iv)
            decryptor = cipher.decryptor()
            try:
                return _unpad(decryptor.update(data) + decryptor.finalize(), bits)
            except ValueError:
                continue
        raise CertificateError("a PKCS#12 bag does not decrypt with the empty password")
    raise _Unsupported(name)


_MAC_HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512")


def _verify_mac(pfx) -> None:
    """The bundle's MAC with the empty password: a corrupted or tampered bundle stops here."""
    mac_data = pfx["mac_data"]
    if not mac_data or mac_data.native is None:
        return
    hash_name = mac_data["mac"]["digest_algorithm"]["algorithm"].native
    if hash_name not in _MAC_HASHES:
        raise _Unsupported("MAC %s" % hash_name)
    iterations = mac_data["iterations"].native or 1
    if not 0 < iterations <= _MAX_ITERATIONS:
        raise CertificateError("PKCS#12 MAC iteration count %r" % iterations)
    content = pfx["auth_safe"]["content"].native
    expected = mac_data["mac"]["digest"].native
    size = hashlib.new(hash_name).digest_size
    for password in _EMPTY_PASSWORDS_BMP:
        key = _pkcs12_kdf(password, mac_data["mac_salt"].native, iterations, 3, size, hash_name)
        if hmac.compare_digest(hmac.new(key, content, hash_name).digest(), expected):
            return
    raise CertificateError("the PKCS#12 MAC does not verify (corrupted bundle)")


def _bags(pfx_der: bytes):
    pfx = a_pkcs12.Pfx.load(pfx_der)
    if pfx["auth_safe"]["content_type"].native != "data":
        raise _Unsupported("public-key integrity mode")
    _verify_mac(pfx)
    for info in pfx.authenticated_safe:
        kind = info["content_type"].native
        if kind == "data":
            contents = a_pkcs12.SafeContents.load(info["content"].native)
        elif kind == "encrypted_data":
            encrypted = info["content"]["encrypted_content_info"]
            plain = _pbe_decrypt(encrypted["content_encryption_algorithm"],
                                 encrypted["encrypted_content"].native)
            contents = a_pkcs12.SafeContents.load(plain)
        else:
            raise _Unsupported(kind)
        for bag in contents:
            yield bag


def _read_pkcs12_bags(pfx_der: bytes) -> Tuple[list, list]:
    """(private keys as PKCS#8 DER, certificates) from every bag of the bundle."""
    keys, certs = [], []
    count = 0
    for bag in _bags(pfx_der):
        count += 1
        if count > MAX_BAGS:
            raise CertificateError("more than %d PKCS#12 bags" % MAX_BAGS)
        kind = bag["bag_id"].native
        value = bag["bag_value"]
        if kind == "key_bag":
            keys.append(value.untag().dump())
        elif kind == "pkcs8_shrouded_key_bag":
            keys.append(_pbe_decrypt(value["encryption_algorithm"],
                                     value["encrypted_data"].native))
        elif kind == "cert_bag":
            if value["cert_id"].native != "x509":
                continue
            der = value["cert_value"].contents
            certs.append(x509.load_der_x509_certificate(der))
    return keys, certs


def _read_pkcs12_with_cryptography(pfx_der: bytes) -> Tuple[list, list]:
    last = None
    for password in (None, b""):
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(pfx_der, password)
        except (ValueError, TypeError) as e:
            last = e
            continue
        der = None if key is None else key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        return ([der] if der is not None else []), ([cert] if cert else []) + list(extra)
    raise CertificateError("the PKCS#12 bundle does not load: %s" % last)


def read_pkcs12(pfx_der: bytes) -> List[CertificateRecord]:
    """Every certificate of the bundle, each with its private key when the bundle has it."""
    try:
        keys, certs = _read_pkcs12_bags(pfx_der)
    except _Unsupported as e:
        log.info("PKCS#12 uses %s; reading it with cryptography's loader", e)
        keys, certs = _read_pkcs12_with_cryptography(pfx_der)
    except CertificateError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise CertificateError("the PKCS#12 bundle is malformed: %s" % type(e).__name__) \
            from None
    by_public = {}
    try:
        for der in keys:
            by_public[_public_half_of_key(der)] = der
    except (ValueError, TypeError, KeyError) as e:
        raise CertificateError("a PKCS#12 private key is malformed: %s" % type(e).__name__) \
            from None
    records, seen = [], set()
    for cert in certs:
        tp = thumbprint_of(cert)
        if tp in seen:
            continue
        seen.add(tp)
        der = by_public.get(_public_half_of_certificate(cert))
        records.append(CertificateRecord(
            tp, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            None if der is None else a_pem.armor("PRIVATE KEY", der).decode("ascii")))
    if keys and not any(r.has_private_key for r in records):
        log.warning("the PKCS#12 bundle has %d private key(s) matching no certificate", len(keys))
    return records


def _public_half_of_key(der: bytes):
    """What pairs a private key (PKCS#8 DER) with its certificate. An RSA key's public half is
    read from its own fields, not through cryptography, whose RSA key check costs ~40 ms of
    CPU a key natively and over a second on the boot's path under TCG (issue 17). The key is
    only handed on, to the user's .ssh or the certificate store, as waagent's `openssl pkcs12
    -nodes` hands it on: whole and well-formed (parsed through here), not checked. Other key
    types are loaded by cryptography."""
    info = a_keys.PrivateKeyInfo.load(der)
    info.native   # the whole structure parses, or ValueError
    if info["private_key_algorithm"]["algorithm"].native == "rsa":
        fields = info["private_key"].parsed
        return ("rsa", fields["modulus"].native, fields["public_exponent"].native)
    return _public_der(serialization.load_der_private_key(der, password=None))


def _public_half_of_certificate(cert: x509.Certificate):
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        return ("rsa", numbers.n, numbers.e)
    return _public_der(cert)


def decrypt_certificates(data_b64: str, creds: TransportCredentials) -> List[CertificateRecord]:
    """The tenant certificates of a Certificates <Data> value (base64 CMS)."""
    if len(data_b64) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
        raise CertificateError("the Certificates payload is larger than %d bytes"
                               % MAX_PAYLOAD_BYTES)
    try:
        der = base64.b64decode("".join(data_b64.split()), validate=True)
    except ValueError:
        raise CertificateError("the Certificates payload is not base64") from None
    return read_pkcs12(decrypt_envelope(der, creds))
