"""vmSettings (FastTrack, protocol.md §1.14) as typed records: the upstream fixtures parse to the
ExtensionsConfig records with their real values; a handler that breaks the rules is kept with its
reason; anything that is not a vmSettings document is a DocumentError and nothing else."""

import copy
import json
import pathlib
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from workers.platform.errors import DocumentError
from workers.platform.extensionsconfig import ExtensionsConfig, parse_extensions_config
from redaction import MARK as REDACTED
from workers.platform.vmsettings import VmSettingsGoalState, parse_vm_settings

DATA = pathlib.Path(__file__).resolve().parents[2] / "data" / "vmsettings"
BASE = json.loads((DATA / "vm_settings.json").read_text())

AMA = "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent"
ASA = "Microsoft.Azure.Security.Monitoring.AzureSecurityLinuxAgent"
CSE = "Microsoft.Azure.Extensions.CustomScript"
RC = "Microsoft.CPlat.Core.RunCommandHandlerLinux"
VMA = "Microsoft.OSTCExtensions.VMAccessForLinux"


def load(name, etag="ETAG-1"):
    return parse_vm_settings((DATA / name).read_bytes(), etag)


def parse(doc):
    return parse_vm_settings(json.dumps(doc).encode(), "E")


def test_baseline():
    gs = load("vm_settings.json")
    assert isinstance(gs, ExtensionsConfig) and isinstance(gs, VmSettingsGoalState)
    assert gs.etag == "ETAG-1" and gs.host_ga_plugin_version == "1.0.8.115"
    assert gs.schema_version == "0.0"
    assert gs.source == "Fabric" and gs.is_fabric and gs.on_hold
    assert gs.incarnation is None and gs.artifacts_profile_blob is None
    assert gs.status_blob_type == "BlockBlob"
    assert gs.status_upload_blob == (
        "https://dcrcl3a0xs.blob.core.windows.net/$system/edp0plkw2b.86f4ae0a-61f8-48ae-9199-"
        "40f402d56864.status?sv=2018-03-28&sr=b&sk=system-1&sig=KNWgC2%3d&se=9999-01-01T00%3a00"
        "%3a00Z&sp=w")
    assert gs.required_features == ("MultipleExtensionsPerHandler",)
    assert [f.name for f in gs.ga_families] == ["Prod", "Test"]
    prod = gs.ga_family("Prod")
    assert prod.version is None and not prod.is_version_from_rsm and len(prod.uris) == 2
    assert prod.uris[0].endswith("/Microsoft.OSTCLinuxAgent_Prod_uscentraleuap_manifest.xml")
    md = gs.metadata
    assert md.created_on_ticks == 637726657706205217 and md.in_svd_seq_no is None
    assert md.activity_id == "a33f6f53-43d6-4625-b322-1a39651a00c9"
    assert md.correlation_id == "9a47a2a2-e740-4bfc-b11b-4f2f7cfe7d2e"
    # exact integer conversion (waagent's float arithmetic says .620529)
    assert md.created_on == datetime(2021, 11, 16, 13, 22, 50, 620521, tzinfo=timezone.utc)
    vm = gs.in_vm_metadata
    assert (vm.vm_name, vm.vm_size, vm.location, vm.os_type) == (
        "edp0plkw2b", "Standard_B2s", "CentralUSEUAP", "Linux")
    assert vm.vm_id == "86f4ae0a-61f8-48ae-9199-40f402d56864"

    assert [h.name for h in gs.handlers] == [AMA, ASA, CSE, RC, VMA]
    assert all(h.valid for h in gs.handlers)
    ama = gs.handler(AMA.lower())
    assert ama.version == "1.9.1" and ama.state == "enabled" and ama.auto_upgrade
    assert ama.is_json and ama.use_exact_version and not ama.run_as_startup_task
    assert len(ama.manifest_uris) == 3 and ama.failover_location.startswith(
        "https://zrdfepirv2cbn06prdstr01a.")
    (s,) = ama.settings
    assert (s.sequence_number, s.name, s.state, s.dependency_level) == (0, None, "enabled", 0)
    assert s.public_settings == {"GCS_AUTO_CONFIG": True} and s.parsed
    assert s.certificate_thumbprint == "4C4F304667711036E64AF4894B76EB208A863BD4"
    assert s.protected_settings.startswith("MIIBsAYJKoZIhvcNAQcDoIIBoTCCAZ0CAQAxggFpMIIBZQIBADBN")
    cse = gs.handler(CSE)
    assert not cse.is_multi_config and cse.dependency_level == 1
    assert cse.settings[0].dependency_level == 1
    assert cse.settings[0].public_settings == {
        "commandToExecute": "echo 'cee174d4-4daa-4b07-9958-53b9649445c2'"}
    assert cse.settings[0].protected_settings is None
    rc = gs.handler(RC)
    assert rc.is_multi_config and rc.version == "1.2.0"
    assert [(x.name, x.sequence_number, x.state, x.dependency_level) for x in rc.settings] == [
        ("MCExt1", 0, "enabled", 2), ("MCExt2", 0, "enabled", 1), ("MCExt3", 0, "enabled", 0)]
    assert rc.settings[1].public_settings == {
        "source": {"script": "echo 'e865c9bc-a7b3-42c6-9a79-cfa98a1ee8b3'"}}
    vma = gs.handler(VMA)
    assert not vma.auto_upgrade and vma.settings[0].public_settings is None
    assert vma.settings[0].certificate_thumbprint == "59A10F50FFE2A0408D3F03FE336C8FD5716CF25C"


def test_protected_settings_never_in_repr():
    gs = load("vm_settings.json")
    text = repr(gs) + repr(gs.handlers) + str(gs)
    assert "MIIBsAYJ" not in text and "GCS_AUTO_CONFIG" not in text
    assert "4C4F304667711036E64AF4894B76EB208A863BD4" in text  # thumbprints are not secret


def test_same_records_as_the_extensions_config_twin(fixtures_dir):
    """The upstream vm_settings.json and hostgaplugin/ext_conf.xml carry one goal state: the
    two parsers give the same records (the twins differ only in the certificate thumbprint)."""
    ws = parse_extensions_config((fixtures_dir / "hostgaplugin" / "ext_conf.xml").read_bytes())
    ft = load("vm_settings.json")
    assert ws.ga_families == ft.ga_families
    assert ws.required_features == ft.required_features
    assert (ws.status_upload_blob, ws.status_blob_type) == (ft.status_upload_blob,
                                                             ft.status_blob_type)
    assert ws.metadata.created_on_ticks == ft.metadata.created_on_ticks
    assert (ws.metadata.activity_id, ws.metadata.correlation_id) == (
        ft.metadata.activity_id, ft.metadata.correlation_id)

    def shape(h):
        return (h.name, h.version, h.state, h.manifest_uris, h.auto_upgrade, h.is_multi_config,
                h.dependency_level, h.invalid_reason,
                [(s.name, s.sequence_number, s.state, s.dependency_level, s.public_settings,
                  s.protected_settings, s.parsed) for s in h.settings])

    assert [shape(h) for h in ws.handlers] == [shape(h) for h in ft.handlers]


def test_upstream_edge_fixtures():
    empty = load("vm_settings-empty_depends_on.json")
    (cse,) = empty.handlers
    assert cse.valid and cse.dependency_level == 0 and cse.settings[0].dependency_level == 0
    assert empty.source == "FastTrack" and not empty.is_fabric
    assert empty.metadata.in_svd_seq_no == "1"
    # "StatusUploadBlob", "Name", "Version", "Uris": member names in another case
    assert empty.status_upload_blob.startswith("https://dcrcqabsr1.blob.core.windows.net/")
    assert [(f.name, f.version, len(f.uris)) for f in empty.ga_families] == [
        ("Prod", "2.5.0.2", 2), ("Test", "2.5.0.2", 2)]

    invalid_blob = load("vm_settings-invalid_blob_type.json")
    assert invalid_blob.status_blob_type == "BlockBlob" and invalid_blob.status_upload_blob
    assert [h.name for h in invalid_blob.handlers] == [CSE, RC]

    no_blob = load("vm_settings-no_status_upload_blob.json")
    assert no_blob.status_upload_blob is None and no_blob.status_blob_type == "BlockBlob"
    assert no_blob.handler(CSE).dependency_level == 1

    with pytest.raises(DocumentError) as e:
        load("vm_settings-parse_error.json")
    assert e.value.document == "vmSettings" and e.value.reason.startswith("not JSON")

    rsm = load("vm_settings-agent_family_version.json")
    assert rsm.host_ga_plugin_version == "1.0.8.133" and rsm.source == "FastTrack"
    for family in rsm.ga_families:
        assert family.version == "9.9.9.9"
        assert family.is_version_from_rsm and family.is_vm_enabled_for_rsm_upgrades
    assert rsm.handler(AMA).settings[0].certificate_thumbprint == \
        "BD447EF71C3ADDF7C837E84D630F3FAC22CCD22F"
    assert rsm.handler(AMA).manifest_uris == (rsm.handler(AMA).location,)

    redact = load("vm_settings-redact.json")
    assert redact.status_blob_type == "PageBlob" and redact.metadata.in_svd_seq_no == "69"
    assert [h.settings[0].sequence_number for h in redact.handlers] == [1, 12, 13]
    assert redact.handlers[0].failover_location.startswith("https://umsaff4lwzr0mqltcdsj.")
    assert redact.handlers[0].settings[0].public_settings is None
    assert redact.handlers[2].settings[0].public_settings == {}


@pytest.mark.parametrize("name", ["vm_settings.json", "vm_settings-redact.json"])
def test_redacted_for_history(name):
    gs = load(name)
    redacted = gs.redacted
    assert b"sig=" not in redacted and b"MIIBsAYJ" not in redacted and b"MIIC4AYJ" not in redacted
    doc = json.loads(redacted)      # still JSON, same layout
    for egs in doc["extensionGoalStates"]:
        for s in egs["settings"]:
            if "protectedSettings" in s:
                assert s["protectedSettings"] == REDACTED
    assert doc["statusUploadBlob"]["value"].endswith("?" + REDACTED)
    assert len(parse_vm_settings(redacted).handlers) == len(gs.handlers)


# --- a handler that breaks the rules: kept, with the reason --------------------------------------

def egs(doc, name):
    return next(e for e in doc["extensionGoalStates"] if e["name"] == name)


def drop_thumbprint(d):
    del egs(d, AMA)["settings"][0]["protectedSettingsCertThumbprint"]


def two_depends_on(d):
    item = egs(d, CSE)["dependsOn"][0]
    egs(d, CSE)["dependsOn"] = [item, dict(item, dependencyLevel=2)]


def two_settings(d):
    egs(d, CSE)["settings"] = egs(d, CSE)["settings"] * 2


def setter(name, key, value):
    def mutate(d):
        egs(d, name)[key] = value
    return mutate


def mc_entry(index, key, value=None, delete=False):
    def mutate(d):
        entry = egs(d, RC)["settings"][index]
        if delete:
            del entry[key]
        else:
            entry[key] = value
    return mutate


def delete(name, key):
    def mutate(d):
        del egs(d, name)[key]
    return mutate


HANDLER_CASES = [
    (AMA, drop_thumbprint, "protectedSettings without protectedSettingsCertThumbprint"),
    (CSE, two_depends_on, "dependsOn of the single-config handler %s has 2 items, expected one"
     % CSE),
    (CSE, two_settings, "2 settings for the single-config handler %s" % CSE),
    (CSE, setter(CSE, "state", ""), "state is '', expected one of enabled, disabled, uninstall"),
    (CSE, setter(CSE, "state", "running"), "state is 'running'"),
    (CSE, delete(CSE, "version"), "%s without version" % CSE),
    (CSE, setter(CSE, "version", 216), "version is a int, not a string"),
    (CSE, delete(CSE, "settingsSeqNo"), "%s without settingsSeqNo" % CSE),
    (CSE, setter(CSE, "settingsSeqNo", "one"), "settingsSeqNo is not an integer"),
    (CSE, setter(CSE, "settingsSeqNo", 1.5), "settingsSeqNo is not an integer"),
    (CSE, setter(CSE, "settingsSeqNo", True), "settingsSeqNo is not an integer"),
    (CSE, setter(CSE, "settingsSeqNo", 10 ** 30), "settingsSeqNo is out of range"),
    (CSE, setter(CSE, "settingsSeqNo", -1), "settingsSeqNo is out of range"),
    (CSE, setter(CSE, "dependsOn", "level 1"), "dependsOn is a str, not an array"),
    (CSE, setter(CSE, "dependsOn", [{"dependencyLevel": "high"}]),
     "dependencyLevel is not an integer"),
    (CSE, setter(CSE, "dependsOn", [{}]), "without dependencyLevel"),
    (CSE, setter(CSE, "dependsOn", ["x"]), "dependsOn of %s is a str, not an object" % CSE),
    (CSE, setter(CSE, "settings", "{}"), "settings is a str, not an array"),
    (CSE, setter(CSE, "settings", [7]), "settings of %s is a int, not an object" % CSE),
    (CSE, setter(CSE, "additionalLocations", "https://x/"), "additionalLocations is a str"),
    (CSE, setter(CSE, "additionalLocations", [1]), "additionalLocations holds something other"),
    (CSE, setter(CSE, "location", ["https://x/"]), "location is a list, not a string"),
    (CSE, setter(CSE, "isMultiConfig", "perhaps"), "isMultiConfig is not a boolean"),
    (CSE, setter(CSE, "autoUpgrade", 1), "autoUpgrade is not a boolean"),
    (RC, mc_entry(0, "extensionName", delete=True),
     "a settings entry of the multi-config handler %s without extensionName" % RC),
    (RC, mc_entry(1, "seqNo", delete=True), "settings MCExt2 of %s without seqNo" % RC),
    (RC, mc_entry(1, "seqNo", "7x"), "settings MCExt2 of %s seqNo is not an integer" % RC),
    (RC, mc_entry(2, "extensionName", "MCExt1"), "several settings with the same extensionName"),
    (RC, mc_entry(0, "protectedSettings", "MIIB"), "settings MCExt1 of %s has protectedSettings "
     "without protectedSettingsCertThumbprint" % RC),
    (RC, mc_entry(0, "protectedSettings", 5), "protectedSettings is a int, not a string"),
    (RC, lambda d: egs(d, RC)["dependsOn"][0].pop("name"),
     "a dependsOn item of the multi-config handler %s without name" % RC),
    (RC, lambda d: egs(d, RC)["dependsOn"][1].update(dependencyLevel=2 ** 40),
     "dependencyLevel is out of range"),
]


@pytest.mark.parametrize("name, mutate, reason", HANDLER_CASES,
                         ids=[c[2][:50] for c in HANDLER_CASES])
def test_invalid_handler_is_kept_with_its_reason(name, mutate, reason):
    doc = copy.deepcopy(BASE)
    mutate(doc)
    gs = parse(doc)
    bad = gs.handler(name)
    assert bad is not None and not bad.valid
    assert reason in bad.invalid_reason, bad.invalid_reason
    assert bad.name == name
    others = [h for h in gs.handlers if h.name != name]
    assert len(others) == 4 and all(h.valid for h in others)


@pytest.mark.parametrize("value", ["{not json", "[1, 2]", "\"text\"", {"already": "object"}, 42])
def test_public_settings_that_do_not_parse_keep_the_extension_without_settings(value):
    doc = copy.deepcopy(BASE)
    egs(doc, CSE)["settings"][0]["publicSettings"] = value
    (s,) = parse(doc).handler(CSE).settings
    assert parse(doc).handler(CSE).valid
    assert s.public_settings is None and not s.parsed and s.sequence_number == 0


def test_public_settings_nested_too_deeply_is_unparsed_not_a_crash():
    doc = copy.deepcopy(BASE)
    egs(doc, CSE)["settings"][0]["publicSettings"] = "[" * 200000 + "]" * 200000
    (s,) = parse(doc).handler(CSE).settings
    assert not s.parsed


def test_empty_and_missing_parts():
    doc = {"hostGAPluginVersion": "1.0.8.159"}
    gs = parse(doc)
    assert gs.handlers == () and gs.ga_families == () and gs.required_features == ()
    assert gs.status_upload_blob is None and gs.source == "UNKNOWN" and not gs.is_fabric
    assert gs.metadata.created_on_ticks == 0 and gs.metadata.created_on is None
    doc = copy.deepcopy(BASE)
    egs(doc, CSE)["settings"] = []
    egs(doc, CSE)["dependsOn"] = []
    cse = parse(doc).handler(CSE)
    assert cse.valid and cse.settings == () and cse.dependency_level == 0
    doc = copy.deepcopy(BASE)
    egs(doc, CSE)["settingsSeqNo"] = "4"
    assert parse(doc).handler(CSE).settings[0].sequence_number == 4


def test_uninstall_and_disabled_handlers_are_valid():
    doc = copy.deepcopy(BASE)
    egs(doc, CSE)["state"] = "uninstall"
    egs(doc, RC)["settings"][2]["extensionState"] = "Disabled"
    gs = parse(doc)
    assert gs.handler(CSE).valid and gs.handler(CSE).state == "uninstall"
    assert gs.handler(RC).valid and gs.handler(RC).settings[2].state == "disabled"


# --- not a vmSettings document: DocumentError with the reason ------------------------------------

def with_top(key, value):
    doc = copy.deepcopy(BASE)
    doc[key] = value
    return json.dumps(doc).encode()


DOCUMENT_CASES = [
    (b"", "not JSON"),
    (b"<Extensions/>", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[]", "not a JSON object but a list"),
    (b"null", "not a JSON object but a NoneType"),
    (b"\"vmSettings\"", "not a JSON object but a str"),
    (b"12", "not a JSON object but a int"),
    (b"{}", "no hostGAPluginVersion: not a vmSettings document"),
    (b'{"hostGAPluginVersion": ""}', "no hostGAPluginVersion"),
    (b'{"hostGAPluginVersion": 1.08}', "hostGAPluginVersion is a float, not a string"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"a": ' * 100000 + b"1" + b"}" * 100000, "nested too deeply"),
    (with_top("extensionGoalStates", "x"), "extensionGoalStates is a str, not an array"),
    (with_top("extensionGoalStates", {"name": "x"}), "extensionGoalStates is a dict"),
    (with_top("extensionGoalStates", [5]), "an extensionGoalStates item is a int"),
    (with_top("extensionGoalStates", [{"version": "1.0"}]),
     "an extensionGoalStates item without name"),
    (with_top("gaFamilies", "Prod"), "gaFamilies is a str, not an array"),
    (with_top("gaFamilies", [["Prod"]]), "a gaFamilies item is a list, not an object"),
    (with_top("gaFamilies", [{"uris": []}]), "a GA family without name"),
    (with_top("gaFamilies", [{"name": "Prod", "uris": "https://x/"}]), "uris is a str"),
    (with_top("requiredFeatures", "MultipleExtensionsPerHandler"), "requiredFeatures is a str"),
    (with_top("requiredFeatures", [{"value": "x"}]), "a required feature without name"),
    (with_top("statusUploadBlob", "https://x/"), "statusUploadBlob is a str, not an object"),
    (with_top("statusUploadBlob", {"statusBlobType": "PageBlob"}),
     "statusUploadBlob without value"),
    (with_top("statusUploadBlob", {"value": ["https://x/"]}), "statusUploadBlob value is a list"),
    (with_top("extensionsLastModifiedTickCount", 1e400), "not an integer"),
    (with_top("extensionsLastModifiedTickCount", -5), "out of range"),
    (with_top("extensionsLastModifiedTickCount", 10 ** 40), "out of range"),
    (with_top("extensionsLastModifiedTickCount", "yesterday"), "not an integer"),
    (with_top("inSvdSeqNo", [1]), "inSvdSeqNo is neither a number nor a string"),
    (with_top("onHold", "maybe"), "onHold is not a boolean"),
    (with_top("inVMMetadata", []), "inVMMetadata is a list, not an object"),
    (with_top("inVMMetadata", {"vmName": 5}), "inVMMetadata vmName is a int"),
    (with_top("activityId", 5), "activityId is a int, not a string"),
    (with_top("extensionGoalStatesSource", ["FastTrack"]), "extensionGoalStatesSource is a list"),
]


@pytest.mark.parametrize("body, reason", DOCUMENT_CASES, ids=[c[1][:40] for c in DOCUMENT_CASES])
def test_not_a_vm_settings_document(body, reason):
    with pytest.raises(DocumentError) as e:
        parse_vm_settings(body, "E")
    assert e.value.document == "vmSettings"
    assert reason in e.value.reason, e.value.reason


def test_huge_numbers_are_document_errors_or_rejected_values():
    digits = b"9" * 5000        # int() limits (Python 3.11+) or a range check: both rejected
    body = with_top("extensionsLastModifiedTickCount", 0).replace(
        b'"extensionsLastModifiedTickCount": 0', b'"extensionsLastModifiedTickCount": ' + digits)
    with pytest.raises(DocumentError):
        parse_vm_settings(body)
    doc = copy.deepcopy(BASE)
    egs(doc, CSE)["settingsSeqNo"] = 0
    body = json.dumps(doc).encode().replace(b'"settingsSeqNo": 0, "isMultiConfig": false, '
                                            b'"settings": [{"publicSettings": "{\\"command',
                                            b'"settingsSeqNo": ' + digits + b', "isMultiConfig": '
                                            b'false, "settings": [{"publicSettings": "{\\"command')
    assert digits in body
    try:
        gs = parse_vm_settings(body)
    except DocumentError:
        return                  # Python 3.11+: the JSON decoder refuses the number itself
    assert "settingsSeqNo is out of range" in gs.handler(CSE).invalid_reason


# --- property: nothing but DocumentError, whatever the JSON --------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                               max_size=4),
    max_leaves=20)
KEYS = ["hostGAPluginVersion", "extensionGoalStates", "gaFamilies", "requiredFeatures",
        "statusUploadBlob", "inVMMetadata", "extensionsLastModifiedTickCount", "inSvdSeqNo",
        "onHold", "activityId", "extensionGoalStatesSource", "vmSettingsSchemaVersion"]
EGS_KEYS = ["name", "version", "state", "location", "failoverlocation", "additionalLocations",
            "settings", "settingsSeqNo", "isMultiConfig", "dependsOn", "autoUpgrade",
            "encodedSignature"]
SETTINGS_KEYS = ["publicSettings", "protectedSettings", "protectedSettingsCertThumbprint",
                 "seqNo", "extensionName", "extensionState"]


def only_document_errors(body):
    try:
        gs = parse_vm_settings(body, "E")
    except DocumentError:
        return
    repr(gs)
    for handler in gs.handlers:
        assert handler.name
        for s in handler.settings:
            assert isinstance(s.sequence_number, int)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_any_json_value_is_a_record_or_a_document_error(value):
    only_document_errors(json.dumps(value).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KEYS), JSON_VALUES)
def test_any_top_level_member_is_a_record_or_a_document_error(key, value):
    only_document_errors(with_top(key, value))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([AMA, CSE, RC]), st.sampled_from(EGS_KEYS + SETTINGS_KEYS), JSON_VALUES)
def test_any_handler_member_is_a_record_or_a_document_error(name, key, value):
    doc = copy.deepcopy(BASE)
    target = egs(doc, name)
    if key in SETTINGS_KEYS:
        target = target["settings"][0]
    target[key] = value
    only_document_errors(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_record_or_a_document_error(body):
    only_document_errors(body)


# --- as waagent reads what the platform sends (issue 13 §8) ------------------------------------

def test_multi_config_depends_on_an_extension_not_in_the_document_invalidates_it_whole():
    """waagent refuses the whole vmSettings document when a multi-config dependsOn item names
    no extension of the handler's settings: the last good goal state is kept."""
    doc = copy.deepcopy(BASE)
    egs(doc, RC)["dependsOn"][0]["name"] = "NoSuchExtension"
    with pytest.raises(DocumentError) as e:
        parse(doc)
    assert e.value.document == "vmSettings"
    assert "'NoSuchExtension'" in e.value.reason and RC in e.value.reason


@pytest.mark.parametrize("given, kept", [("Uninstall", "uninstall"), ("running", "running"),
                                         ("DISABLED", "disabled")])
def test_a_multi_config_extension_state_is_kept_lower_cased(given, kept):
    doc = copy.deepcopy(BASE)
    egs(doc, RC)["settings"][2]["extensionState"] = given
    rc = parse(doc).handler(RC)
    assert rc.valid and rc.settings[2].state == kept


@pytest.mark.parametrize("state", ["enabled", "disabled", "uninstall"])
def test_single_config_settings_take_the_handlers_state(state):
    doc = copy.deepcopy(BASE)
    egs(doc, CSE)["state"] = state
    cse = parse(doc).handler(CSE)
    assert cse.valid and [s.state for s in cse.settings] == [state]


def test_an_absent_rsm_flag_is_absent_not_false():
    prod = load("vm_settings.json").ga_family("Prod")
    assert prod.is_version_from_rsm is None and prod.is_vm_enabled_for_rsm_upgrades is None
    prod = load("vm_settings-redact.json").ga_family("Prod")
    assert prod.is_version_from_rsm is False and prod.is_vm_enabled_for_rsm_upgrades is False
    prod = load("vm_settings-agent_family_version.json").ga_family("Prod")
    assert prod.is_version_from_rsm is True and prod.is_vm_enabled_for_rsm_upgrades is True
