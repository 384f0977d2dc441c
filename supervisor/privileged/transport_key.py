"""Making the transport key pair (protocol.md §1.6, DESIGN.md "Certificates"): by `openssl req`
(OS.OpensslPath, as waagent makes it) when there is one, else by a short-lived Python child,
`python -I -m supervisor.privileged.transport_key FOLDER TAG`. Either way the resident
supervisor never imports cryptography (its memory is the figure that matters). openssl first:
on a boot with little CPU the child's interpreter and cryptography's import came before the
prime search, on the path to Ready (issue 17).

RSA 2048, self-signed `CN=LinuxTransport`, 730 days, with a SubjectKeyIdentifier (the
WireServer names the CMS recipient by it). The child writes, in the root-only FOLDER the broker
made: the tag first removed (a crash midway leaves no valid pair), the certificate, the key
(0600), then the tag `TAG NOT_AFTER` that says which VM the pair is for and until when. It
prints the SKI (public) and nothing else.
"""

import os
import sys
import time

TRANSPORT_SUBJECT = "LinuxTransport"
TRANSPORT_DAYS = 730
KEY_BITS = 2048
KEY_FILE = "TransportPrivate.pem"
CERT_FILE = "TransportCert.pem"
TAG_FILE = "Transport.tag"


def generate():
    """(private key, certificate) as cryptography objects."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TRANSPORT_SUBJECT)])
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=TRANSPORT_DAYS))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def pem_pair(key, cert):
    """(key PEM, certificate PEM) bytes: PKCS#8, unencrypted (the folder is root's, 0700)."""
    from cryptography.hazmat.primitives import serialization
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)   # (never follows a link: the link itself goes)
    except FileNotFoundError:
        pass


def _write_tag(folder: str, tag: str) -> None:
    """Last, once the pair is whole: which VM it is for and our own renewal date, from the
    validity we asked for (no deprecated accessor)."""
    from statefiles import write_atomic
    not_after = time.time() + TRANSPORT_DAYS * 86400
    write_atomic(os.path.join(folder, TAG_FILE), ("%s %d\n" % (tag, not_after)).encode(),
                 0o600, 0, 0)


def write_pair(folder: str, tag: str) -> str:
    """Make a pair for `tag` in `folder`; returns the SKI in hex."""
    from cryptography import x509
    from statefiles import write_atomic
    key, cert = generate()
    key_pem, cert_pem = pem_pair(key, cert)
    _unlink(os.path.join(folder, TAG_FILE))
    write_atomic(os.path.join(folder, CERT_FILE), cert_pem, 0o600, 0, 0)
    write_atomic(os.path.join(folder, KEY_FILE), key_pem, 0o600, 0, 0)
    _write_tag(folder, tag)
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    return ski.hex()


# The certificate openssl makes: the same subject, validity and extensions as generate().
OPENSSL_CONFIG = b"""[req]
distinguished_name = dn
prompt = no
[dn]
CN = %s
[v3]
subjectKeyIdentifier = hash
basicConstraints = critical,CA:FALSE
""" % TRANSPORT_SUBJECT.encode()


def write_pair_with_openssl(openssl: str, folder: str, tag: str, cancel=None) -> None:
    """What write_pair does, by `openssl req` (no secret on its argv: paths; its config on
    stdin), two searches at once where there is a second CPU (first_to_finish). Each writes
    under its own temporary names; the first pair made is made 0600 and renamed, then the tag;
    whatever else was written goes."""
    from supervisor.privileged import SPARE_NICE, first_to_finish, run, searches
    _unlink(os.path.join(folder, TAG_FILE))
    tries = [{name: os.path.join(folder, ".%s.%d.new" % (name, i))
              for name in (KEY_FILE, CERT_FILE)} for i in range(searches())]
    for name in os.listdir(folder):
        # openssl opens its outputs with O_TRUNC and follows links: whatever stands at such
        # names (a crash's leftover, a link a former group-writable folder let in) goes first.
        if name.startswith(".") and name.endswith(".new"):
            _unlink(os.path.join(folder, name))

    def search(i):
        def make(stop):
            run([openssl, "req", "-x509", "-newkey", "rsa:%d" % KEY_BITS, "-nodes",
                 "-keyout", tries[i][KEY_FILE], "-out", tries[i][CERT_FILE],
                 "-days", str(TRANSPORT_DAYS), "-config", "/dev/stdin", "-extensions", "v3"],
                stdin=OPENSSL_CONFIG, timeout=120, cancel=stop, nice=SPARE_NICE if i else 0)
        return make
    try:
        won = first_to_finish([search(i) for i in range(len(tries))], cancel)
        for name, path in tries[won].items():
            os.chmod(path, 0o600)
            os.rename(path, os.path.join(folder, name))
    finally:
        for paths in tries:
            for path in paths.values():
                _unlink(path)
    _write_tag(folder, tag)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or os.geteuid() != 0:
        print("usage (root): python -I -m supervisor.privileged.transport_key FOLDER TAG",
              file=sys.stderr)
        return 2
    os.umask(0o077)
    print(write_pair(args[0], args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
