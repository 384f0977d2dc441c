"""Certificates decrypt with `openssl cms -decrypt` (the oracle) to exactly the scenario's
certificates and keys, in both ciphers; protectedSettings decrypt with the tenant certificate."""
import base64
import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
import requests
from asn1crypto import cms as a_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.contract.emulator_harness import DEFAULT_SCENARIO, WS_HEADERS


def openssl(*args, **kw):
    return subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def transport(tmp_path_factory):
    """A transport key and certificate made as waagent makes them (protocol.md §1.6)."""
    d = tmp_path_factory.mktemp("transport")
    prv, crt = d / "TransportPrivate.pem", d / "TransportCert.pem"
    openssl("req", "-x509", "-nodes", "-subj", "/CN=LinuxTransport", "-days", "730", "-newkey", "rsa:2048",
            "-keyout", str(prv), "-out", str(crt))
    body = "".join(l for l in crt.read_text().splitlines() if "-----" not in l)
    return {"prv": prv, "crt": crt, "header": body, "dir": d}


def certificates_url(emu):
    root = ET.fromstring(requests.get(emu.ws + "/machine/?comp=goalstate", headers=WS_HEADERS, timeout=10).content)
    return root.find("Container/RoleInstanceList/RoleInstance/Configuration/Certificates").text


def decrypt(data_b64, transport, name):
    """The waagent pipeline: S/MIME wrapper, openssl cms -decrypt, openssl pkcs12 -nodes."""
    p7m = transport["dir"] / (name + ".p7m")
    p7m.write_text("MIME-Version:1.0\nContent-Disposition: attachment; filename=\"%s\"\n"
                   "Content-Type: application/x-pkcs7-mime; name=\"%s\"\nContent-Transfer-Encoding: base64\n\n%s"
                   % (p7m, p7m, data_b64))
    pfx = transport["dir"] / (name + ".pfx")
    openssl("cms", "-decrypt", "-in", str(p7m), "-inkey", str(transport["prv"]), "-recip", str(transport["crt"]),
            "-out", str(pfx))
    pem = openssl("pkcs12", "-nodes", "-password", "pass:", "-in", str(pfx)).stdout.decode()
    certs = [x509.load_pem_x509_certificate(m.encode()) for m in
             re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)]
    keys = [serialization.load_pem_private_key(m.encode(), None) for m in
            re.findall(r"-----BEGIN PRIVATE KEY-----.*?-----END PRIVATE KEY-----", pem, re.S)]
    return certs, keys


def pub(k):
    return k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# Azure (captured in 2025) wraps the AES-128 content key with RSAES-OAEP (SHA-1, MGF1-SHA1), the
# 3DES one with PKCS#1 v1.5.
@pytest.mark.parametrize("cipher,oid_name,wrap", [("AES128_CBC", "aes128_cbc", "rsaes_oaep"),
                                                  ("DES_EDE3_CBC", "tripledes_3key", "rsaes_pkcs1v15")])
def test_certificates_decrypt_to_the_scenario_certificates(default_emulator, transport, cipher, oid_name, wrap):
    r = requests.get(certificates_url(default_emulator), timeout=10, headers=dict(
        WS_HEADERS, **{"x-ms-guest-agent-public-x509-cert": transport["header"], "x-ms-cipher-name": cipher}))
    assert r.status_code == 200, r.text
    doc = ET.fromstring(r.content)
    assert doc.find("Format").text == "Pkcs7BlobWithPfxContents"
    assert doc.find("Version").text == "2012-11-30"
    data = doc.find("Data").text  # verbatim, line breaks and all, as waagent writes it

    # the envelope: recipient named by subject key identifier, the requested cipher
    env = a_cms.ContentInfo.load(base64.b64decode("".join(data.split())))["content"]
    ski = x509.load_pem_x509_certificate(transport["crt"].read_bytes()).extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    rid = env["recipient_infos"][0].chosen["rid"]
    assert rid.name == "subject_key_identifier" and rid.native == ski
    assert env["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].native == oid_name
    key_algorithm = env["recipient_infos"][0].chosen["key_encryption_algorithm"]
    assert key_algorithm["algorithm"].native == wrap
    if wrap == "rsaes_oaep":
        params = key_algorithm["parameters"]
        assert params["hash_algorithm"]["algorithm"].native == "sha1"
        assert params["mask_gen_algorithm"]["algorithm"].native == "mgf1"
        assert params["mask_gen_algorithm"]["parameters"]["algorithm"].native == "sha1"

    certs, keys = decrypt(data, transport, cipher)
    expected = requests.get(default_emulator.ws + "/_emulator/certificates", timeout=10).json()["certificates"]
    assert sorted(c.fingerprint(hashes.SHA1()).hex().upper() for c in certs) == \
        sorted(e["thumbprint"] for e in expected)
    want_keys = {pub(serialization.load_pem_private_key(e["private_key"].encode(), None).public_key())
                 for e in expected if e["private_key"]}
    assert {pub(k.public_key()) for k in keys} == want_keys
    # and they are the scenario's files
    scenario_dir = os.path.dirname(DEFAULT_SCENARIO)
    for e in expected:
        with open(os.path.join(scenario_dir, "certs", e["name"] + ".crt"), "rb") as f:
            assert x509.load_pem_x509_certificate(f.read()).fingerprint(hashes.SHA1()).hex().upper() == e["thumbprint"]


def test_certificates_rejects_unknown_cipher(default_emulator, transport):
    r = requests.get(certificates_url(default_emulator), timeout=10, headers=dict(
        WS_HEADERS, **{"x-ms-guest-agent-public-x509-cert": transport["header"], "x-ms-cipher-name": "RC2"}))
    assert r.status_code == 400


def test_protected_settings_decrypt_with_the_tenant_certificate(default_emulator, tmp_path):
    root = ET.fromstring(requests.get(default_emulator.ws + "/machine/?comp=goalstate", headers=WS_HEADERS,
                                      timeout=10).content)
    url = root.find("Container/RoleInstanceList/RoleInstance/Configuration/ExtensionsConfig").text
    ext = ET.fromstring(requests.get(url, headers=WS_HEADERS, timeout=10).content)
    hs = json.loads(ext.find("PluginSettings/Plugin/RuntimeSettings").text)["runtimeSettings"][0]["handlerSettings"]
    certs = {c["thumbprint"]: c for c in
             requests.get(default_emulator.ws + "/_emulator/certificates", timeout=10).json()["certificates"]}
    tenant = certs[hs["protectedSettingsCertThumbprint"]]
    assert tenant["name"] == "settings"
    (tmp_path / "t.crt").write_text(tenant["certificate"])
    (tmp_path / "t.prv").write_text(tenant["private_key"])
    (tmp_path / "p.der").write_bytes(base64.b64decode(hs["protectedSettings"]))
    out = openssl("cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "p.der"), "-inkey",
                  str(tmp_path / "t.prv"), "-recip", str(tmp_path / "t.crt")).stdout
    assert json.loads(out) == {"secret": "only-the-extension-reads-this"}
