"""Replay of recorded goal states, every host rewritten to the emulator; certs.xml of the fixtures
stays decryptable with wire/trans_prv."""
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import requests

from tests.contract.emulator_harness import FIXTURES, WS_HEADERS

WIRE = os.path.join(FIXTURES, "wire")
URL_RE = re.compile(r"https?://([A-Za-z0-9.\-]+)")
XMLNS_RE = re.compile(r'xmlns(:[\w.\-]+)?="[^"]*"')


def transport_header():
    with open(os.path.join(WIRE, "trans_cert")) as f:
        return "".join(l.strip() for l in f if "-----" not in l)


def fetch_all(emu):
    gs = requests.get(emu.ws + "/machine/?comp=goalstate", headers=WS_HEADERS, timeout=10)
    assert gs.status_code == 200
    conf = {c.tag: c.text for c in ET.fromstring(gs.content).find(
        "Container/RoleInstanceList/RoleInstance/Configuration")}
    docs = {"goal_state": gs.text}
    for tag in ("HostingEnvironmentConfig", "SharedConfig", "ExtensionsConfig"):
        r = requests.get(conf[tag], headers=WS_HEADERS, timeout=10)
        assert r.status_code == 200, (tag, r.text)
        docs[tag] = r.text
    r = requests.get(conf["Certificates"], timeout=10, headers=dict(
        WS_HEADERS, **{"x-ms-guest-agent-public-x509-cert": transport_header(), "x-ms-cipher-name": "DES_EDE3_CBC"}))
    assert r.status_code == 200
    docs["Certificates"] = r.text
    return conf, docs


def assert_only_emulator_hosts(docs):
    for name, text in docs.items():
        for host in URL_RE.findall(XMLNS_RE.sub("", text)):
            assert host == "127.0.0.1", (name, host)


def test_replay_fixture_layout(emulator_factory, tmp_path):
    emu = emulator_factory("--replay", WIRE)
    conf, docs = fetch_all(emu)
    assert_only_emulator_hosts(docs)
    assert "168.63.129.16" not in "".join(docs.values())
    assert conf["HostingEnvironmentConfig"].startswith(emu.ws + "/machine/865a6683-91d8-450f-99ae/")
    ext = ET.fromstring(docs["ExtensionsConfig"].encode())
    assert ext.find("Plugins/Plugin").get("location").startswith(emu.ws + "/storage/replay/mock-goal-state/")
    assert ext.find("StatusUploadBlob").text.startswith(emu.ws + "/storage/replay/test.blob.core.windows.net/")
    # certs.xml is served as recorded and decrypts with the transport key it was made for
    with open(os.path.join(WIRE, "certs.xml")) as f:
        assert docs["Certificates"] == f.read()
    data = ET.fromstring(docs["Certificates"].encode()).find("Data").text
    p7m = tmp_path / "Certificates.p7m"
    p7m.write_text("MIME-Version:1.0\nContent-Disposition: attachment; filename=\"%s\"\nContent-Type: "
                   "application/x-pkcs7-mime; name=\"%s\"\nContent-Transfer-Encoding: base64\n\n%s" % (p7m, p7m, data))
    subprocess.run(["openssl", "cms", "-decrypt", "-in", str(p7m), "-inkey", os.path.join(WIRE, "trans_prv"),
                    "-recip", os.path.join(WIRE, "trans_cert"), "-out", str(tmp_path / "c.pfx")], check=True,
                   capture_output=True, timeout=60)
    pem = subprocess.run(["openssl", "pkcs12", "-nodes", "-password", "pass:", "-in", str(tmp_path / "c.pfx")],
                         check=True, capture_output=True, timeout=60).stdout
    assert b"BEGIN CERTIFICATE" in pem and b"PRIVATE KEY" in pem
    # the recorded status blob URL now lands on the emulator's storage
    status_url = ext.find("StatusUploadBlob").text
    r = requests.put(status_url, data=b"{}", headers={"x-ms-blob-type": "BlockBlob"}, timeout=10)
    assert r.status_code == 201
    # replay is read-only
    assert requests.post(emu.ws + "/_emulator/incarnation", timeout=10).status_code == 409


def test_replay_other_ext_conf(emulator_factory):
    emu = emulator_factory("--replay", WIRE, "--ext-conf", "ext_conf_sequencing.xml")
    conf, docs = fetch_all(emu)
    assert_only_emulator_hosts(docs)
    assert len(ET.fromstring(docs["ExtensionsConfig"].encode()).findall("Plugins/Plugin")) == 2


def test_replay_history_layout(emulator_factory, tmp_path):
    names = {"goal_state.xml": "GoalState.xml", "hosting_env.xml": "HostingEnvironmentConfig.xml",
             "shared_config.xml": "SharedConfig.xml", "ext_conf.xml": "ExtensionsConfig.xml",
             "certs.xml": "Certificates.xml"}
    for src, dst in names.items():
        shutil.copyfile(os.path.join(WIRE, src), tmp_path / dst)
    (tmp_path / "VmSettings.json").write_text('{"hostGAPluginVersion": "1.0.8.159", "extensionGoalStatesSource": '
                                              '"FastTrack", "statusUploadBlob": {"value": '
                                              '"https://test.blob.core.windows.net/vhds/x.status?sig=abc"}}')
    emu = emulator_factory("--replay", str(tmp_path))
    conf, docs = fetch_all(emu)
    assert_only_emulator_hosts(docs)
    state = requests.get(emu.ws + "/_emulator/state", timeout=10).json()["vm"]
    assert state["layout"] == "history" and "vm_settings" in state["documents"]
    r = requests.get(emu.hgap + "/vmSettings", timeout=10, headers={
        "x-ms-version": "2015-09-01", "x-ms-containerid": state["container_id"],
        "x-ms-host-config-name": state["config_name"]})
    assert r.status_code == 200 and r.headers["ETag"]
    assert_only_emulator_hosts({"vmSettings": r.text})
