"""CMS EnvelopedData and PKCS#12 building, as the platform does it for Certificates and
protectedSettings.

Written against RFC 5652 / RFC 7292 with asn1crypto for the structures and cryptography for the
primitives, so nothing here depends on how the agent decrypts.
"""
import hashlib
import hmac
import os

from asn1crypto import algos, cms, core, pkcs12 as a_pkcs12, x509 as a_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs12

try:  # cryptography >= 43 keeps 3DES in "decrepit"; the old name is deprecated, gone in 48.
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # Debian 12's cryptography 38
    TripleDES = algorithms.TripleDES

# x-ms-cipher-name values the platform accepts, mapped to (CMS algorithm name, key bytes, iv bytes,
# how the content key is wrapped). Azure's payloads (captured in 2025) wrap the AES-128 key with
# RSAES-OAEP (SHA-1, MGF1-SHA1) and the 3DES key with PKCS#1 v1.5.
CIPHERS = {
    "AES128_CBC": ("aes128_cbc", 16, 16, "rsaes_oaep"),
    "DES_EDE3_CBC": ("tripledes_3key", 24, 8, "rsaes_pkcs1v15"),
}
KEY_WRAPS = ("rsaes_oaep", "rsaes_pkcs1v15")


def subject_key_identifier(cert):
    """The SKI of a certificate: its extension, else SHA-1 of the public key bits (RFC 5280 4.2.1.2)."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _symmetric_encrypt(cipher_name, key, iv, data):
    if cipher_name == "aes128_cbc":
        algo, block = algorithms.AES(key), 128
    else:
        algo, block = TripleDES(key), 64
    padder = padding.PKCS7(block).padder()
    padded = padder.update(data) + padder.finalize()
    enc = Cipher(algo, modes.CBC(iv)).encryptor()
    return enc.update(padded) + enc.finalize()


def envelope(data, recipient_cert, cipher="AES128_CBC", recipient_id="subject_key_identifier",
             key_wrap=None):
    """DER CMS EnvelopedData of `data` for one RSA recipient.

    recipient_id: "subject_key_identifier" (what WireServer does for the transport certificate) or
    "issuer_and_serial_number". key_wrap: "rsaes_oaep" or "rsaes_pkcs1v15"; None: the platform's
    choice for the cipher (CIPHERS).
    """
    if cipher not in CIPHERS:
        raise ValueError("unsupported cipher %r" % cipher)
    algo_name, key_len, iv_len, default_wrap = CIPHERS[cipher]
    key_wrap = key_wrap or default_wrap
    if key_wrap not in KEY_WRAPS:
        raise ValueError("unsupported key wrap %r" % key_wrap)
    key = os.urandom(key_len)
    iv = os.urandom(iv_len)
    encrypted_content = _symmetric_encrypt(algo_name, key, iv, data)
    if key_wrap == "rsaes_oaep":
        # RFC 3560 defaults (SHA-1, MGF1-SHA1, empty label): the parameters are an empty SEQUENCE
        wrap_padding = asym_padding.OAEP(mgf=asym_padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(),
                                         label=None)
        key_algorithm = cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_oaep", "parameters": algos.RSAESOAEPParams({
            "hash_algorithm": {"algorithm": "sha1"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha1"}}})})
    else:
        wrap_padding = asym_padding.PKCS1v15()
        key_algorithm = cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"})
    encrypted_key = recipient_cert.public_key().encrypt(key, wrap_padding)

    if recipient_id == "subject_key_identifier":
        rid = cms.RecipientIdentifier(
            name="subject_key_identifier", value=subject_key_identifier(recipient_cert))
        version = "v2"
    else:
        a_cert = a_x509.Certificate.load(recipient_cert.public_bytes(serialization.Encoding.DER))
        rid = cms.RecipientIdentifier(name="issuer_and_serial_number", value=cms.IssuerAndSerialNumber({
            "issuer": a_cert.issuer, "serial_number": a_cert.serial_number}))
        version = "v0"
    recipient = cms.RecipientInfo(name="ktri", value=cms.KeyTransRecipientInfo({
        "version": version,
        "rid": rid,
        "key_encryption_algorithm": key_algorithm,
        "encrypted_key": encrypted_key,
    }))
    enveloped = cms.EnvelopedData({
        # RFC 5652 6.1: version 2 when any recipient is a v2 KeyTransRecipientInfo
        "version": "v2" if version == "v2" else "v0",
        "recipient_infos": [recipient],
        "encrypted_content_info": cms.EncryptedContentInfo({
            "content_type": "data",
            "content_encryption_algorithm": algos.EncryptionAlgorithm({
                "algorithm": algo_name, "parameters": core.OctetString(iv)}),
            "encrypted_content": encrypted_content,
        }),
    })
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


# --- PKCS#12 -------------------------------------------------------------------------------

def _pkcs12_kdf(password_bmp, salt, iterations, key_len, hash_name):
    """RFC 7292 appendix B.2 key derivation, ID=3 (MAC key)."""
    h = hashlib.new(hash_name)
    u, v = h.digest_size, h.block_size
    D = bytes([3]) * v

    def fill(b):
        if not b:
            return b""
        n = v * ((len(b) + v - 1) // v)
        return (b * (n // len(b) + 1))[:n]

    I = bytearray(fill(salt) + fill(password_bmp))
    out = b""
    while len(out) < key_len:
        A = D + bytes(I)
        for _ in range(iterations):
            A = hashlib.new(hash_name, A).digest()
        out += A
        B = (A * (v // u + 1))[:v]
        b_int = int.from_bytes(B, "big") + 1
        for j in range(0, len(I), v):
            chunk = (int.from_bytes(I[j:j + v], "big") + b_int) % (1 << (8 * v))
            I[j:j + v] = chunk.to_bytes(v, "big")
    return out[:key_len]


_HASHES = {"sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}


def _mac(auth_safe_der, salt, iterations, hash_name):
    # OpenSSL's empty password "" is the BMPString terminator only: 00 00
    key = _pkcs12_kdf(b"\x00\x00", salt, iterations, hashlib.new(hash_name).digest_size, hash_name)
    return hmac.new(key, auth_safe_der, hash_name).digest()


def pfx_of(entries):
    """One unencrypted PKCS#12 (empty password, MAC present) holding every (private_key|None, cert).

    cryptography's serialize_key_and_certificates takes one key, so each pair is serialised on its
    own and their SafeContents are merged into one AuthenticatedSafe, then the MAC is recomputed.
    """
    pieces = []
    for i, (key, cert) in enumerate(entries):
        der = pkcs12.serialize_key_and_certificates(
            ("cert%d" % i).encode(), key, cert, None, serialization.NoEncryption())
        pieces.append(a_pkcs12.Pfx.load(der))
    if not pieces:
        raise ValueError("no certificates")
    first = pieces[0]
    safes = []
    for pfx in pieces:
        safes.extend(list(pfx.authenticated_safe))
    auth_safe = a_pkcs12.AuthenticatedSafe(safes)
    content_der = auth_safe.dump()
    mac_data = first["mac_data"]
    hash_name = _HASHES[mac_data["mac"]["digest_algorithm"]["algorithm"].native]
    salt = mac_data["mac_salt"].native
    iterations = mac_data["iterations"].native
    mac_field = a_pkcs12.MacData({
        "mac": {"digest_algorithm": {"algorithm": hash_name}, "digest": _mac(content_der, salt, iterations, hash_name)},
        "mac_salt": salt,
        "iterations": iterations,
    })
    return a_pkcs12.Pfx({
        "version": "v3",
        "auth_safe": {"content_type": "data", "content": core.OctetString(content_der)},
        "mac_data": mac_field,
    }).dump()


def thumbprint(cert):
    """Uppercase SHA-1 hex of the DER certificate, as `openssl x509 -fingerprint` shows it without colons."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()
