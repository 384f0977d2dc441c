"""The broker's half of the certificates for extensions (supervisor/privileged/
tenant_certificates.py): <TP>.crt/.prv written root 0600 in Lib.Dir only under the
certificate's own SHA-1, replaced never followed, and only what the broker wrote is removed.
Root only (the files are root's); the attack tests drive the same verb from a real worker."""

import os
import stat
import threading

import pytest

from config import defaults
from ipc.errors import IpcError
from ipc.verbs import check_args
from ipc.verbs import platform as P
from supervisor import broker
from supervisor.privileged import tenant_certificates as tc
from workers.platform.certificates import CertificateRecord
from emulator import tenant_certs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the certificates are root's")


@pytest.fixture(scope="module")
def tenants():
    return [tenant_certs.generate("one"), tenant_certs.generate("two")]


def item(t, key=True):
    return {"thumbprint": t.thumbprint, "certificate": t.cert_pem(),
            "private_key": t.key_pem() if key else None}


def make_conf(tmp_path):
    return defaults().with_overrides(Agent__StateDir=str(tmp_path / "state"),
                                     Lib__Dir=str(tmp_path / "lib"))


def install(conf, items):
    args = {"certificates": items}
    check_args(P.INSTALL_CERTIFICATES, args)
    return tc.install_certificates(broker.Context("extensions", conf, threading.Event()), args)


def mode_owner(path):
    st = os.lstat(path)
    return st.st_uid, stat.S_IMODE(st.st_mode)


def test_written_root_only_and_removed_when_they_leave(tmp_path, tenants):
    conf = make_conf(tmp_path)
    lib = tmp_path / "lib"
    one, two = tenants
    result = install(conf, [item(one), item(two, key=False)])
    assert result == {"installed": sorted([one.thumbprint, two.thumbprint]), "removed": []}
    assert (lib / (one.thumbprint + ".crt")).read_text() == one.cert_pem()
    assert (lib / (one.thumbprint + ".prv")).read_text() == one.key_pem()
    assert not (lib / (two.thumbprint + ".prv")).exists()
    for name in os.listdir(lib):
        assert mode_owner(lib / name) == (0, 0o600), name
    assert mode_owner(lib) == (0, 0o700)
    # a file the broker did not write stays, whatever its name
    foreign = lib / ("F" * 40 + ".crt")
    foreign.write_text("waagent's")
    result = install(conf, [item(two, key=False)])
    assert result["removed"] == [one.thumbprint]
    assert not (lib / (one.thumbprint + ".crt")).exists()
    assert not (lib / (one.thumbprint + ".prv")).exists()
    assert foreign.read_text() == "waagent's"
    assert install(conf, [])["removed"] == [two.thumbprint]
    assert sorted(os.listdir(lib)) == [foreign.name]


def test_a_thumbprint_that_is_not_the_certificates_writes_nothing(tmp_path, tenants):
    conf = make_conf(tmp_path)
    one, two = tenants
    lying = dict(item(one), thumbprint=two.thumbprint)
    with pytest.raises(IpcError, match="not the SHA-1"):
        install(conf, [item(two), lying])
    assert not (tmp_path / "lib").exists() or os.listdir(tmp_path / "lib") == []


def test_a_symlink_in_place_is_replaced_not_followed(tmp_path, tenants):
    conf = make_conf(tmp_path)
    lib = tmp_path / "lib"
    lib.mkdir(mode=0o700)
    target = tmp_path / "shadow"
    target.write_text("root:secret\n")
    one = tenants[0]
    os.symlink(str(target), str(lib / (one.thumbprint + ".prv")))
    install(conf, [item(one)])
    assert target.read_text() == "root:secret\n"
    assert not os.path.islink(lib / (one.thumbprint + ".prv"))
    assert (lib / (one.thumbprint + ".prv")).read_text() == one.key_pem()


def test_a_key_dropped_from_the_bundle_is_removed(tmp_path, tenants):
    conf = make_conf(tmp_path)
    one = tenants[0]
    install(conf, [item(one)])
    install(conf, [item(one, key=False)])
    assert (tmp_path / "lib" / (one.thumbprint + ".crt")).exists()
    assert not (tmp_path / "lib" / (one.thumbprint + ".prv")).exists()


@pytest.mark.parametrize("thumbprint", ["../x", "../../etc/shadow", "provisioned",
                                        "f6abaa61098a301ebb8a571c3c7cf77f355f7fa9", "A" * 41])
def test_names_that_are_not_thumbprints_do_not_pass_the_schema(thumbprint, tenants):
    from ipc.errors import INVALID_ARGS
    with pytest.raises(IpcError) as e:
        check_args(P.INSTALL_CERTIFICATES, {"certificates": [dict(item(tenants[0]),
                                                                   thumbprint=thumbprint)]})
    assert e.value.code == INVALID_ARGS


def test_the_worker_side_sends_the_records(tenants):
    from workers.platform.certificates import install_for_extensions
    sent = []

    class FakeWorker:   # the channel is mocked: the integration tests run the real one
        def call(self, verb, args):
            check_args(P.INSTALL_CERTIFICATES, args)
            sent.append((verb, args))
            return {"installed": [a["thumbprint"] for a in args["certificates"]],
                    "removed": []}, []
    one = tenants[0]
    record = CertificateRecord(one.thumbprint, one.cert_pem(), one.key_pem())
    assert install_for_extensions(FakeWorker(), [record]) == ([one.thumbprint], [])
    assert sent == [("platform.install_certificates", {"certificates": [item(one)]})]


def test_a_lib_dir_others_may_write_gets_nothing(tmp_path, tenants):
    conf = make_conf(tmp_path)
    lib = tmp_path / "lib"
    lib.mkdir()
    os.chmod(lib, 0o777)
    with pytest.raises(IpcError, match="not root's alone"):
        install(conf, [item(tenants[0])])
    assert os.listdir(lib) == []
    os.chmod(lib, 0o755)   # readable by others is no danger: the files are 0600
    install(conf, [item(tenants[0])])
    assert mode_owner(lib / (tenants[0].thumbprint + ".prv")) == (0, 0o600)


def test_a_refusal_is_a_certificate_error_for_the_worker_loop(tenants):
    """The extensions worker's loop handles PlatformError: the broker's FAILED becomes one."""
    from ipc.errors import FAILED
    from workers.platform.certificates import install_for_extensions
    from workers.platform.errors import CertificateError, PlatformError

    class RefusingWorker:   # the channel is mocked: the attack tests run the real one
        def call(self, verb, args):
            raise IpcError(FAILED, "installing the certificates failed: No space left")
    one = tenants[0]
    with pytest.raises(CertificateError, match="No space left") as e:
        install_for_extensions(RefusingWorker(), [CertificateRecord(one.thumbprint,
                                                                    one.cert_pem(), None)])
    assert isinstance(e.value, PlatformError)
