"""The emulator's documents have the structure of the recorded WireServer documents."""
import glob
import io
import json
import os
import xml.etree.ElementTree as ET
import zipfile

import requests

from tests.contract.emulator_harness import FIXTURES, SCENARIOS, WS_HEADERS

HGAP_HEADERS = {"x-ms-version": "2015-09-01", "x-ms-containerid": "c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2"}


def paths(el, prefix=""):
    """Every element path with its attribute names: the structure a parser walks."""
    here = "%s/%s" % (prefix, el.tag)
    out = {(here, None)} | {(here, a) for a in el.attrib}
    for child in el:
        out |= paths(child, here)
    return out


def fixture_root(*rel):
    return ET.parse(os.path.join(FIXTURES, *rel)).getroot()


def get_ws(url):
    r = requests.get(url, headers=WS_HEADERS, timeout=10)
    assert r.status_code == 200, r.text
    return r


def goal_state_urls(emu):
    root = ET.fromstring(get_ws(emu.ws + "/machine/?comp=goalstate").content)
    conf = root.find("Container/RoleInstanceList/RoleInstance/Configuration")
    return root, {c.tag: c.text for c in conf}


def test_versions_matches_fixture_structure(default_emulator):
    r = requests.get(default_emulator.ws + "/?comp=versions", timeout=10)
    ours = ET.fromstring(r.content)
    assert paths(ours) == paths(fixture_root("wire", "version_info.xml"))
    assert ours.find("Preferred/Version").text == "2012-11-30"


def test_goal_state_has_the_fixture_structure(default_emulator):
    root, urls = goal_state_urls(default_emulator)
    assert paths(root) == paths(fixture_root("wire", "goal_state.xml"))
    assert root.find("Incarnation").text == "1"
    for tag in ("HostingEnvironmentConfig", "SharedConfig", "ExtensionsConfig", "Certificates"):
        assert urls[tag].startswith(default_emulator.ws + "/machine/")
        assert "incarnation=1" in urls[tag]


def test_hosting_environment_and_shared_config_structure(default_emulator):
    _, urls = goal_state_urls(default_emulator)
    hec = ET.fromstring(get_ws(urls["HostingEnvironmentConfig"]).content)
    assert paths(hec) <= paths(fixture_root("wire", "hosting_env.xml"))
    # what the agent reads (protocol.md §1.5)
    assert hec.find("Incarnation").get("instance") == "MachineRole_IN_0"
    assert hec.find("Role").get("name") == "MachineRole"
    assert hec.find("Deployment").get("name")
    shared = ET.fromstring(get_ws(urls["SharedConfig"]).content)
    assert paths(shared) <= paths(fixture_root("wire", "shared_config.xml"))


def _all_ext_conf_paths():
    out = set()
    for f in glob.glob(os.path.join(FIXTURES, "wire", "ext_conf*.xml")) + \
            glob.glob(os.path.join(FIXTURES, "hostgaplugin", "ext_conf*.xml")):
        try:
            out |= paths(ET.parse(f).getroot())
        except ET.ParseError:
            pass
    return out


def test_extensions_config_structure(default_emulator):
    _, urls = goal_state_urls(default_emulator)
    ours = ET.fromstring(get_ws(urls["ExtensionsConfig"]).content)
    ours_paths = paths(ours)
    # nothing invented: every element and attribute appears in some recorded ExtensionsConfig
    assert ours_paths <= _all_ext_conf_paths()
    # and everything of the baseline document is there (the signature is optional)
    baseline = {p for p in paths(fixture_root("wire", "ext_conf.xml")) if p[1] != "encodedSignature"}
    assert baseline <= ours_paths
    plugin = ours.find("Plugins/Plugin")
    assert plugin.get("name") == "Contoso.Demo.HelloWorld" and plugin.get("version") == "1.0.0"
    assert plugin.get("location").startswith(default_emulator.ws + "/storage/")
    settings = ours.find("PluginSettings/Plugin/RuntimeSettings")
    hs = json.loads(settings.text)["runtimeSettings"][0]["handlerSettings"]
    assert hs["publicSettings"] == {"greeting": "hello"}
    assert len(hs["protectedSettingsCertThumbprint"]) == 40 and hs["protectedSettings"]
    blob = ours.find("StatusUploadBlob")
    assert blob.get("statusBlobType") == "BlockBlob" and blob.text.startswith(default_emulator.ws + "/storage/")
    md = ours.find("InVMGoalStateMetaData")
    assert int(md.get("createdOnTicks")) > 630000000000000000


def test_manifest_and_package_served_from_the_handler_folder(default_emulator):
    _, urls = goal_state_urls(default_emulator)
    plugin = ET.fromstring(get_ws(urls["ExtensionsConfig"]).content).find("Plugins/Plugin")
    for loc in (plugin.get("location"), plugin.get("failoverlocation")):
        manifest = ET.fromstring(requests.get(loc, timeout=10).content)
        assert paths(manifest) <= paths(fixture_root("wire", "manifest_vm_access.xml"))
    uri = manifest.find("Plugins/Plugin/Uris/Uri").text
    assert manifest.find("Plugins/Plugin/Version").text == "1.0.0"
    assert uri.endswith("Contoso.Demo.HelloWorld__1.0.0")
    pkg = requests.get(uri, timeout=10).content
    with zipfile.ZipFile(io.BytesIO(pkg)) as zf:
        names = set(zf.namelist())
        hm = json.loads(zf.read("HandlerManifest.json"))
        mode = zf.getinfo("hello.sh").external_attr >> 16
    assert names == set(os.listdir(os.path.join(SCENARIOS, "handlers", "hello")))
    assert hm[0]["handlerManifest"]["enableCommand"] == "hello.sh enable"
    assert mode & 0o100
    # the same package through the HostGAPlugin, by artifact location
    r = requests.get(default_emulator.hgap + "/extensionArtifact", timeout=10, headers=dict(
        HGAP_HEADERS, **{"x-ms-host-config-name": _config_name(default_emulator), "x-ms-artifact-location": uri}))
    assert r.status_code == 200 and r.content == pkg


def _config_name(emu):
    root, urls = goal_state_urls(emu)
    return urls["ConfigName"]


def test_wireserver_rejects_requests_without_its_headers(default_emulator):
    url = default_emulator.ws + "/machine/?comp=goalstate"
    assert requests.get(url, timeout=10).status_code == 400
    assert requests.get(url, timeout=10, headers={"x-ms-agent-name": "WALinuxAgent"}).status_code == 400
    assert requests.get(url, timeout=10, headers=dict(WS_HEADERS, **{"x-ms-agent-name": "Other"})).status_code == 400
    _, urls = goal_state_urls(default_emulator)
    r = requests.get(urls["Certificates"], headers=WS_HEADERS, timeout=10)
    assert r.status_code == 400 and "x-ms-guest-agent-public-x509-cert" in r.text
    r = requests.get(urls["Certificates"], timeout=10, headers=dict(
        WS_HEADERS, **{"x-ms-guest-agent-public-x509-cert": "bm90IGEgY2VydA==", "x-ms-cipher-name": "AES128_CBC"}))
    assert r.status_code == 400


def test_hostgaplugin_documents(default_emulator):
    hgap = default_emulator.hgap
    assert requests.get(hgap + "/versions", headers=HGAP_HEADERS, timeout=10).json()[0] == "2015-09-01"
    assert requests.get(hgap + "/health", timeout=10).status_code == 200
    headers = dict(HGAP_HEADERS, **{"x-ms-host-config-name": _config_name(default_emulator),
                                    "x-ms-client-correlationid": "6b7c6a4e-2a2b-4a55-8a0e-0a0a0a0a0a0a"})
    r = requests.get(hgap + "/vmSettings", headers=headers, timeout=10)
    assert r.status_code == 200 and r.headers["ETag"]
    doc = r.json()
    assert doc["extensionGoalStatesSource"] == "Fabric"
    assert doc["extensionGoalStates"][0]["name"] == "Contoso.Demo.HelloWorld"
    r2 = requests.get(hgap + "/vmSettings", headers=dict(headers, **{"if-none-match": r.headers["ETag"]}), timeout=10)
    assert r2.status_code == 304
    bad = dict(headers, **{"x-ms-containerid": "00000000-0000-0000-0000-000000000000"})
    r3 = requests.get(hgap + "/vmSettings", headers=bad, timeout=10)
    assert r3.status_code == 400 and "InvalidContainerConfiguration" in r3.text
    stale = dict(headers, **{"x-ms-host-config-name": "old.xml"})
    assert requests.get(hgap + "/vmSettings", headers=stale, timeout=10).status_code == 410


def test_imds(default_emulator):
    url = default_emulator.imds + "/metadata/instance/compute?api-version=2018-02-01"
    assert requests.get(url, timeout=10).status_code == 400
    assert requests.get(default_emulator.imds + "/metadata/instance/compute", headers={"Metadata": "true"},
                        timeout=10).status_code == 400
    doc = requests.get(url, headers={"Metadata": "true"}, timeout=10).json()
    assert doc["osProfile"]["computerName"] == "guestagent-demo"
    for key in ("location", "subscriptionId", "resourceGroupName", "vmId", "vmSize"):
        assert doc[key]
    full = requests.get(default_emulator.imds + "/metadata/instance?api-version=2021-02-01",
                        headers={"Metadata": "true"}, timeout=10).json()
    assert full["compute"]["vmId"] == doc["vmId"]


def test_imds_is_answered_on_the_wireserver_address_too(default_emulator):
    """The platform serves IMDS on the WireServer's address as well (waagent falls back to it)."""
    path = "/metadata/instance/compute?api-version=2018-02-01"
    on_ws = requests.get(default_emulator.ws + path, headers={"Metadata": "true"}, timeout=10)
    assert on_ws.status_code == 200, on_ws.text
    on_imds = requests.get(default_emulator.imds + path, headers={"Metadata": "true"}, timeout=10)
    assert on_ws.json() == on_imds.json()
    # the same rules: no Metadata header, no answer
    assert requests.get(default_emulator.ws + path, timeout=10).status_code == 400


def test_every_shipped_scenario_serves_parseable_documents(emulator_factory):
    import glob as _glob
    for path in sorted(_glob.glob(os.path.join(SCENARIOS, "*.json"))):
        emu = emulator_factory("--scenario", path)
        requests.post(emu.ws + "/_emulator/faults", json={}, timeout=10)  # clear any scripted faults
        root, urls = goal_state_urls(emu)
        for tag in ("HostingEnvironmentConfig", "SharedConfig", "ExtensionsConfig"):
            doc = ET.fromstring(get_ws(urls[tag]).content)
            if tag == "ExtensionsConfig":
                assert paths(doc) <= _all_ext_conf_paths(), path
                for plugin in doc.findall("Plugins/Plugin"):
                    assert requests.get(plugin.get("location"), timeout=10).status_code == 200
        st = emu.state()["vm"]
        r = requests.get(emu.hgap + "/vmSettings", timeout=10, headers=dict(
            HGAP_HEADERS, **{"x-ms-host-config-name": st["config_name"]}))
        assert r.status_code == 200 and r.json()["extensionGoalStates"], path


def test_multi_config_extensions_config(emulator_factory):
    emu = emulator_factory("--scenario", os.path.join(SCENARIOS, "multi_config.json"))
    _, urls = goal_state_urls(emu)
    doc = ET.fromstring(get_ws(urls["ExtensionsConfig"]).content)
    mc = doc.find("PluginSettings/Plugin[@name='Contoso.Demo.MultiHello']")
    ers = mc.findall("ExtensionRuntimeSettings")
    assert [(e.get("name"), e.get("seqNo"), e.get("state")) for e in ers] == [
        ("one", "0", "enabled"), ("two", "5", "enabled"), ("three", "1", "disabled")]
    assert mc.find("RuntimeSettings") is None
    dep = mc.find("DependsOn")
    assert dep.get("name") == "one" and dep.get("dependencyLevel") == "2"
    two = json.loads(ers[1].text)["runtimeSettings"][0]["handlerSettings"]
    assert two["protectedSettings"] and two["protectedSettingsCertThumbprint"]
    assert doc.find("RequiredFeatures/RequiredFeature/Name").text == "MultipleExtensionsPerHandler"
    assert doc.find("PluginSettings/Plugin[@name='Contoso.Demo.NoSettings']") is None
    st = emu.state()["vm"]
    vms = requests.get(emu.hgap + "/vmSettings", timeout=10, headers=dict(
        HGAP_HEADERS, **{"x-ms-host-config-name": st["config_name"]})).json()
    mc_ft = next(g for g in vms["extensionGoalStates"] if g["name"] == "Contoso.Demo.MultiHello")
    assert mc_ft["isMultiConfig"] and [s["extensionName"] for s in mc_ft["settings"]] == ["one", "two", "three"]
