"""The broker's transport key (supervisor/privileged/platform.py): made by the real child
process into a root-only folder, once per VM id, never trusted when someone else could have
written it, handed over as a read-only descriptor. Root only (the pair is root's)."""

import os
import stat
import threading

import pytest

from config import defaults
from supervisor import broker
from supervisor.privileged import platform
from supervisor.privileged.transport_key import CERT_FILE, KEY_FILE, TAG_FILE
from workers.platform.certificates import load_transport

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the transport key is root's")

UUID = "A1B2C3D4-0001-0002-0003-000000000001"


def make_conf(tmp_path, uuid=UUID):
    sysroot = tmp_path / "sysroot"
    (sysroot / "sys" / "class" / "dmi" / "id").mkdir(parents=True, exist_ok=True)
    (sysroot / "sys" / "class" / "dmi" / "id" / "product_uuid").write_text(uuid + "\n")
    return defaults().with_overrides(Agent__StateDir=str(tmp_path / "state"),
                                     OS__SysRoot=str(sysroot))


def ask(conf):
    """The verb's handler, as the loop calls it: (result, the descriptor it sends)."""
    ctx = broker.Context("extensions", conf, threading.Event())
    result = platform.transport_key(ctx, {})
    assert len(ctx.reply_fds) == 1
    return result, ctx.reply_fds[0]


def ski_of(conf):
    result, fd = ask(conf)
    return load_transport(fd, result["certificate"]).subject_key_identifier


def test_the_pair_is_made_root_only_and_tagged_with_the_vm(tmp_path):
    conf = make_conf(tmp_path)
    folder = platform.ensure(conf)
    st = os.stat(folder)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)
    for name in (KEY_FILE, CERT_FILE, TAG_FILE):
        st = os.stat(os.path.join(folder, name))
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), name
    with open(os.path.join(folder, TAG_FILE)) as f:
        assert f.read().split()[0] == UUID.lower()
    assert not [n for n in os.listdir(folder) if n.startswith(".")]


@pytest.mark.parametrize("openssl", ["/usr/bin/openssl", "/nonexistent/openssl"])
def test_either_maker_gives_the_pair_the_platform_expects(tmp_path, caplog, openssl):
    """openssl (OS.OpensslPath, waagent's way, no Python child on the boot's path) when it is
    there, else the Python child: RSA 2048, self-signed CN=LinuxTransport, 730 days, an SKI
    (the CMS recipient is named by it), not a CA; the key the worker loads matches it."""
    import datetime
    import logging
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa
    if openssl.startswith("/usr") and not os.access(openssl, os.X_OK):
        pytest.skip("no openssl on this machine")   # (.ci/apt-packages.txt installs it)
    conf = make_conf(tmp_path).with_overrides(OS__OpensslPath=openssl)
    with caplog.at_level(logging.INFO):
        folder = platform.ensure(conf)
    maker = "openssl" if openssl.startswith("/usr") else "python"
    assert "maker=%s" % maker in caplog.text
    assert sorted(os.listdir(folder)) == sorted([KEY_FILE, CERT_FILE, TAG_FILE])
    result, fd = ask(conf)
    creds = load_transport(fd, result["certificate"])   # raises if the key does not match
    cert = x509.load_pem_x509_certificate(result["certificate"].encode())
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "CN=LinuxTransport"
    assert isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().key_size == 2048
    # (the _utc names from cryptography 42 on; Debian 12 ships 38, which has only the others)
    after, before = ((cert.not_valid_after_utc, cert.not_valid_before_utc)
                     if hasattr(cert, "not_valid_after_utc")
                     else (cert.not_valid_after, cert.not_valid_before))
    days = (after - before) / datetime.timedelta(days=1)
    assert 729.9 <= days <= 730.1
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ski == creds.subject_key_identifier
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False


def test_the_descriptor_is_read_only_and_the_pair_is_kept(tmp_path):
    conf = make_conf(tmp_path)
    result, fd = ask(conf)
    try:
        assert os.O_ACCMODE & __import__("fcntl").fcntl(fd, __import__("fcntl").F_GETFL) \
            == os.O_RDONLY
        with pytest.raises(OSError):
            os.write(fd, b"x")
    finally:
        os.close(fd)
    assert result["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    first = ski_of(conf)
    assert ski_of(conf) == first     # asked again: the same pair, not a new one


def save_endpoint(conf, worker):
    folder = os.path.join(conf["Agent.StateDir"], worker)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, platform.SAVED_ENDPOINT_FILE)
    with open(path, "w") as f:
        f.write("10.0.0.1")
    return path


def test_a_new_vm_id_gets_a_new_pair_and_forgets_the_saved_endpoints(tmp_path):
    conf = make_conf(tmp_path)
    first = ski_of(conf)
    kept = save_endpoint(conf, "monitoring")
    assert ski_of(conf) == first and os.path.exists(kept)     # the same VM keeps both
    new_vm = make_conf(tmp_path, "A1B2C3D4-0001-0002-0003-000000000002")
    saved = [save_endpoint(new_vm, w) for w in ("extensions", "monitoring")]
    assert ski_of(new_vm) != first
    assert not any(os.path.exists(p) for p in saved)


def test_a_pair_near_its_end_is_renewed(tmp_path):
    conf = make_conf(tmp_path)
    first = ski_of(conf)
    tag = os.path.join(platform.folder_of(conf), TAG_FILE)
    with open(tag, "w") as f:
        f.write("%s %d\n" % (UUID.lower(), 1000))
    assert ski_of(conf) != first


@pytest.mark.parametrize("spoil", ["foreign_owner", "group_readable", "symlink", "hard_link"])
def test_a_key_anyone_else_could_have_written_is_never_used(tmp_path, spoil):
    conf = make_conf(tmp_path)
    first = ski_of(conf)
    folder = platform.folder_of(conf)
    key = os.path.join(folder, KEY_FILE)
    if spoil == "foreign_owner":      # an older agent's folder: a worker wrote the key
        os.chown(key, 65534, 65534)
    elif spoil == "group_readable":
        os.chmod(key, 0o640)
    elif spoil == "symlink":
        os.unlink(key)
        os.symlink("/etc/shadow", key)
    else:
        os.link(key, str(tmp_path / "second-name"))
    assert ski_of(conf) != first
    st = os.lstat(key)
    assert stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_nlink) == (0, 1)


def test_an_older_agents_group_folder_is_made_root_only(tmp_path):
    conf = make_conf(tmp_path)
    folder = platform.folder_of(conf)
    os.makedirs(folder)
    os.chmod(folder, 0o2770)
    planted = os.path.join(folder, "WireServerEndpoint")
    with open(planted, "w") as f:
        f.write("10.0.0.1")
    os.chown(planted, 65534, 65534)
    platform.ensure(conf)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert not os.path.exists(planted)


def test_no_vm_id_is_a_tag_too(tmp_path):
    conf = make_conf(tmp_path, "not a guid")
    assert platform.vm_tag(conf) == platform.NO_VM_ID
    first = ski_of(conf)
    assert ski_of(conf) == first


def test_the_wait_for_the_first_key_ends_when_it_is_made_or_cancelled_or_late(monkeypatch):
    # The host keys wait for it (ssh.py): never longer than asked, nor past a stop.
    monkeypatch.setattr(platform, "first_made", threading.Event())
    assert 0.25 <= platform.wait_for_first(0.3) < 1.0          # never made: the deadline
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    assert platform.wait_for_first(30, cancel) < 2.0          # the supervisor stopping
    threading.Timer(0.2, platform.first_made.set).start()
    assert 0.1 <= platform.wait_for_first(30) < 2.0           # made
    assert platform.wait_for_first(30) < 0.1                  # made before: no wait


def test_a_search_that_hangs_does_not_hold_the_transport_key(tmp_path):
    """Two openssl searches race where there is a second CPU (a prime search takes a random
    time: 2-10 s under emulation). One of them here never ends: the pair still comes from the
    other, the hung one is ended, and no temporary file of either is left."""
    from supervisor.privileged import searches
    if searches() < 2:
        pytest.skip("one CPU: one search")
    real = "/usr/bin/openssl"
    if not os.access(real, os.X_OK):
        pytest.skip("no openssl on this machine")
    hung = tmp_path / "hung"
    slow = tmp_path / "openssl"
    # The first search to start hangs (mkdir decides, atomically) and writes its pid.
    slow.write_text("#!/bin/sh\nif mkdir %s 2>/dev/null; then echo $$ > %s/pid; exec sleep 600;"
                    " fi\nexec %s \"$@\"\n" % (hung, hung, real))
    slow.chmod(0o755)
    conf = make_conf(tmp_path).with_overrides(OS__OpensslPath=str(slow))
    made = []
    maker = threading.Thread(target=lambda: made.append(platform.ensure(conf)), daemon=True)
    maker.start()
    maker.join(60)
    assert made, "the pair waited for the hung search"
    assert sorted(os.listdir(made[0])) == sorted([KEY_FILE, CERT_FILE, TAG_FILE])
    result, fd = ask(conf)
    load_transport(fd, result["certificate"])   # raises if the key does not match
    pid = int((hung / "pid").read_text())
    assert not os.path.exists("/proc/%d" % pid), "the hung search lives on"
