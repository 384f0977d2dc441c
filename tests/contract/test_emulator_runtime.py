"""Changing the VM at run time: each change bumps the incarnation, through the API and the CLI."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import requests

from tests.contract.emulator_harness import DEFAULT_SCENARIO, REPO, SCENARIOS, WS_HEADERS


def goal_state(emu):
    root = ET.fromstring(requests.get(emu.ws + "/machine/?comp=goalstate", headers=WS_HEADERS, timeout=10).content)
    conf = {c.tag: c.text for c in root.find("Container/RoleInstanceList/RoleInstance/Configuration")}
    return root.find("Incarnation").text, conf


def ext_conf(emu):
    inc, conf = goal_state(emu)
    return inc, ET.fromstring(requests.get(conf["ExtensionsConfig"], headers=WS_HEADERS, timeout=10).content)


def ctl(emu, *args):
    r = subprocess.run([sys.executable, "-m", "emulator", "ctl", "--url", emu.ws] + list(args), cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_changes_bump_the_incarnation(emulator_factory, tmp_path):
    emu = emulator_factory("--scenario", DEFAULT_SCENARIO)
    inc, _ = goal_state(emu)
    assert inc == "1"
    _, old_conf = goal_state(emu)

    # add a second extension (a new version of the same handler folder under another name)
    spec = {"name": "Contoso.Demo.Second", "version": "2.0.0", "handler": SCENARIOS + "/handlers/hello",
            "public_settings": {"n": 1}, "dependency_level": 1, "depends_on": ["Contoso.Demo.HelloWorld"]}
    (tmp_path / "second.json").write_text(json.dumps(spec))
    ctl(emu, "add-extension", str(tmp_path / "second.json"))
    inc, doc = ext_conf(emu)
    assert inc == "2" and doc.get("goalStateIncarnation") == "2"
    names = [p.get("name") for p in doc.findall("Plugins/Plugin")]
    assert names == ["Contoso.Demo.HelloWorld", "Contoso.Demo.Second"]
    dep = doc.find("PluginSettings/Plugin[@name='Contoso.Demo.Second']/DependsOn")
    assert dep.get("dependencyLevel") == "1" and dep.find("DependsOnExtension").get("handler") == "Contoso.Demo.HelloWorld"
    manifest = requests.get(doc.find("Plugins/Plugin[@name='Contoso.Demo.Second']").get("location"), timeout=10)
    assert b"<Version>2.0.0</Version>" in manifest.content

    # update: new version and settings; the sequence number rises
    r = requests.post(emu.ws + "/_emulator/extensions", json={"name": "Contoso.Demo.HelloWorld", "version": "1.1.0",
                                                              "public_settings": {"greeting": "bonjour"},
                                                              "protected_settings": {"secret": "s2"},
                                                              "protected_settings_cert": "settings"}, timeout=10)
    assert r.status_code == 200, r.text
    inc, doc = ext_conf(emu)
    assert inc == "3"
    plugin = doc.find("Plugins/Plugin[@name='Contoso.Demo.HelloWorld']")
    assert plugin.get("version") == "1.1.0"
    rs = doc.find("PluginSettings/Plugin[@name='Contoso.Demo.HelloWorld']/RuntimeSettings")
    assert rs.get("seqNo") == "1"
    manifest = requests.get(plugin.get("location"), timeout=10).content
    assert b"<Version>1.0.0</Version>" in manifest and b"<Version>1.1.0</Version>" in manifest

    ctl(emu, "disable-extension", "Contoso.Demo.Second")
    inc, doc = ext_conf(emu)
    assert inc == "4" and doc.find("Plugins/Plugin[@name='Contoso.Demo.Second']").get("state") == "disabled"
    ctl(emu, "remove-extension", "Contoso.Demo.Second")
    inc, doc = ext_conf(emu)
    assert inc == "5" and [p.get("name") for p in doc.findall("Plugins/Plugin")] == ["Contoso.Demo.HelloWorld"]

    before = {c["name"]: c["thumbprint"] for c in emu.state()["vm"]["certificates"]}
    out = ctl(emu, "rotate-cert", "settings")
    assert out["result"]["old_thumbprint"] == before["settings"] != out["result"]["new_thumbprint"]
    inc, doc = ext_conf(emu)
    assert inc == "6"
    hs = json.loads(doc.find("PluginSettings/Plugin/RuntimeSettings").text)["runtimeSettings"][0]["handlerSettings"]
    assert hs["protectedSettingsCertThumbprint"] == out["result"]["new_thumbprint"]

    ctl(emu, "hostname", "renamed-vm")
    inc, _ = goal_state(emu)
    assert inc == "7"
    compute = requests.get(emu.imds + "/metadata/instance/compute?api-version=2021-02-01",
                           headers={"Metadata": "true"}, timeout=10).json()
    assert compute["osProfile"]["computerName"] == "renamed-vm"

    # the previous incarnation's documents are still served; one long gone is 410
    assert requests.get(old_conf["ExtensionsConfig"], headers=WS_HEADERS, timeout=10).status_code == 200
    gone = old_conf["ExtensionsConfig"].replace("incarnation=1", "incarnation=999")
    assert requests.get(gone, headers=WS_HEADERS, timeout=10).status_code == 410

    assert requests.post(emu.ws + "/_emulator/extensions/Nope/disable", timeout=10).status_code == 404


def test_show_prints_the_state(default_emulator):
    r = subprocess.run([sys.executable, "-m", "emulator", "show", "--url", default_emulator.ws], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "incarnation" in r.stdout and "Contoso.Demo.HelloWorld" in r.stdout
    r = subprocess.run([sys.executable, "-m", "emulator", "show", "--json", "--url", default_emulator.ws], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    state = json.loads(r.stdout)
    assert set(state) >= {"emulator", "vm", "received", "counts", "requests", "faults", "latest_status"}


def test_advertise_names_the_standard_ports(emulator_factory):
    emu = emulator_factory("--scenario", DEFAULT_SCENARIO, "--advertise", "10.0.2.2")
    assert emu.info["advertised"]["wireserver"] == "http://10.0.2.2:80"
    assert emu.info["advertised"]["hostgaplugin"] == "http://10.0.2.2:32526"
    _, conf = goal_state(emu)
    assert conf["ExtensionsConfig"].startswith("http://10.0.2.2:80/machine/")


def vm_settings(emu, config_name):
    headers = {"x-ms-version": "2015-09-01", "x-ms-containerid": "c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2",
               "x-ms-host-config-name": config_name}
    r = requests.get(emu.hgap + "/vmSettings", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.headers["ETag"], r.json()


def test_hibernate_resume_renews_the_certificates_under_the_same_incarnation(emulator_factory):
    """A resumed VM finds new tenant certificates (and settings encrypted to them) while the
    incarnation stays; in FastTrack mode the vmSettings are the newer document."""
    emu = emulator_factory("--scenario", SCENARIOS + "/fasttrack.json")
    inc, conf = goal_state(emu)
    etag, doc = vm_settings(emu, conf["ConfigName"])
    _, ext = ext_conf(emu)
    ticks = int(ext.find("InVMGoalStateMetaData").get("createdOnTicks"))
    assert doc["extensionsLastModifiedTickCount"] > ticks
    before = {c["thumbprint"] for c in requests.get(emu.ws + "/_emulator/certificates", timeout=10).json()["certificates"]}
    out = ctl(emu, "hibernate-resume")
    assert set(out["result"]["thumbprints"]) == before
    after = {c["thumbprint"] for c in requests.get(emu.ws + "/_emulator/certificates", timeout=10).json()["certificates"]}
    assert after == set(out["result"]["thumbprints"].values()) and not after & before
    inc2, conf2 = goal_state(emu)
    assert inc2 == inc
    etag2, doc2 = vm_settings(emu, conf2["ConfigName"])
    assert etag2 != etag
    used = {s["protectedSettingsCertThumbprint"] for g in doc2["extensionGoalStates"] for s in g["settings"]
            if s.get("protectedSettings")}
    assert used and used <= after
