"""ExtensionsConfig and manifests: every fixture variant parses; invalid handlers are marked with a
reason while the others stay valid; redaction for history."""

import pytest
from hypothesis import given, settings, strategies as st

from workers.platform.errors import DocumentError
from workers.platform.extensionsconfig import (parse_extensions_config, parse_manifest,
                                               redact_extensions_config)


def all_ext_confs(root):
    return sorted(list((root / "wire").glob("ext_conf*.xml"))
                  + list((root / "hostgaplugin").glob("ext_conf*.xml")))


def test_every_ext_conf_variant_parses(fixtures_dir):
    paths = all_ext_confs(fixtures_dir)
    assert len(paths) >= 40
    for path in paths:
        conf = parse_extensions_config(path.read_bytes())
        assert conf.status_blob_type in ("BlockBlob", "PageBlob"), path.name
        for handler in conf.handlers:
            assert handler.name and handler.version, path.name
            if "Invalid" not in handler.name:
                assert handler.valid, (path.name, handler.invalid_reason)


def test_baseline(fixtures_dir):
    conf = parse_extensions_config((fixtures_dir / "wire" / "ext_conf.xml").read_bytes())
    assert conf.incarnation == "9"
    assert [f.name for f in conf.ga_families] == ["Prod", "Test"]
    (handler,) = conf.handlers
    assert handler.name == "OSTCExtensions.ExampleHandlerLinux"
    assert handler.state == "enabled" and handler.is_json and not handler.auto_upgrade
    assert len(handler.manifest_uris) == 2 and handler.encoded_signature.startswith("MIIn")
    (settings_,) = handler.settings
    assert settings_.sequence_number == 0 and settings_.name is None
    assert settings_.public_settings == {"foo": "bar"}
    assert settings_.protected_settings == "MIICWgYJK"
    assert settings_.certificate_thumbprint == "F6ABAA61098A301EBB8A571C3C7CF77F355F7FA9"
    assert "MIICWgYJK" not in repr(settings_)
    assert conf.status_upload_blob.startswith("https://test.blob.core.windows.net/")
    assert "&sig=" in conf.status_upload_blob
    assert conf.metadata.created_on_ticks == 637726657706205217
    assert conf.metadata.in_svd_seq_no == "10"


def test_variants(fixtures_dir):
    wire = fixtures_dir / "wire"

    def load(name):
        return parse_extensions_config((wire / name).read_bytes())

    assert load("ext_conf_no_settings.xml").handlers[0].settings == ()
    assert load("ext_conf_no_public.xml").handlers[0].settings[0].public_settings is None
    assert load("ext_conf_required_features.xml").required_features[:1] == ("TestRequiredFeature1",)
    assert load("ext_conf_no_extensions-page_blob.xml").status_blob_type == "PageBlob"
    assert load("ext_conf_no_extensions-no_status_blob.xml").status_upload_blob is None
    assert load("ext_conf-no_gs_metadata.xml").metadata is None
    assert load("ext_conf_in_vm_artifacts_profile.xml").artifacts_profile_blob
    assert len(load("ext_conf_additional_locations.xml").handlers[0].additional_locations) >= 1
    seq = load("ext_conf_sequencing.xml")
    levels = {h.name: h.dependency_level for h in seq.handlers}
    assert sorted(levels.values()) != [0, 0]
    case = load("ext_conf_settings_case_mismatch.xml")
    assert all(h.settings for h in case.handlers)
    assert len(load("ext_conf_multiple_extensions.xml").handlers) >= 3
    empty = parse_extensions_config(
        (fixtures_dir / "hostgaplugin" / "ext_conf-empty_depends_on.xml").read_bytes())
    assert empty.handlers[0].valid and empty.handlers[0].dependency_level == 0


@pytest.mark.parametrize("name,reason", [
    ("ext_conf_multiple_depends_on_for_single_handler.xml", "DependsOn"),
    ("ext_conf_multiple_runtime_settings_same_plugin.xml", "RuntimeSettings"),
    ("ext_conf_multiple_settings_for_same_handler.xml", "PluginSettings"),
    ("ext_conf_plugin_settings_version_mismatch.xml", "Version Mismatch"),
    ("ext_conf_single_and_multi_config_settings_same_plugin.xml", "mixed"),
])
def test_invalid_configs_mark_only_that_handler(fixtures_dir, name, reason):
    conf = parse_extensions_config((fixtures_dir / "wire" / "invalid_config" / name).read_bytes())
    bad = conf.handler("OSTCExtensions.ExampleHandlerLinux")
    assert not bad.valid and reason in bad.invalid_reason
    assert all(h.valid for h in conf.handlers if h is not bad)


def test_invalid_and_valid_handlers(fixtures_dir):
    conf = parse_extensions_config(
        (fixtures_dir / "wire" / "ext_conf_invalid_and_valid_handlers.xml").read_bytes())
    assert not conf.handler("OSTCExtensions.InvalidExampleHandlerLinux").valid
    assert conf.handler("OSTCExtensions.ValidExampleHandlerLinux").valid


MULTI = b"""<Extensions version="1.0.0.0" goalStateIncarnation="3"><Plugins>
<Plugin name="Microsoft.CPlat.Core.RunCommandHandlerLinux" version="1.2.0" location="http://a/m" state="enabled" />
</Plugins><PluginSettings>
<Plugin name="Microsoft.CPlat.Core.RunCommandHandlerLinux" version="1.2.0">
<DependsOn name="secondRunCommand" dependencyLevel="3"><DependsOnExtension handler="X" /></DependsOn>
<ExtensionRuntimeSettings seqNo="4" name="firstRunCommand" state="enabled">{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"a":1}}}]}</ExtensionRuntimeSettings>
<ExtensionRuntimeSettings seqNo="7" name="secondRunCommand" state="disabled">not json</ExtensionRuntimeSettings>
</Plugin></PluginSettings></Extensions>"""


def test_multi_config():
    (handler,) = parse_extensions_config(MULTI).handlers
    assert handler.valid and handler.is_multi_config
    first, second = handler.settings
    assert (first.name, first.sequence_number, first.state, first.public_settings) == (
        "firstRunCommand", 4, "enabled", {"a": 1})
    assert (second.name, second.sequence_number, second.state, second.parsed) == (
        "secondRunCommand", 7, "disabled", False)
    assert second.dependency_level == 3 and first.dependency_level == 0


def test_missing_seqno_and_empty_state_are_invalid():
    no_seq = MULTI.replace(b'seqNo="4" ', b"")
    assert "seqNo" in parse_extensions_config(no_seq).handlers[0].invalid_reason
    no_state = MULTI.replace(b'state="enabled" />', b'state="" />')
    assert "state" in parse_extensions_config(no_state).handlers[0].invalid_reason


def test_not_an_extensions_config():
    with pytest.raises(DocumentError, match="root element"):
        parse_extensions_config(b"<GoalState/>")


def test_redaction(fixtures_dir):
    raw = (fixtures_dir / "wire" / "ext_conf_redact.xml").read_bytes()
    redacted = redact_extensions_config(raw)
    assert b"sig=" not in redacted
    assert b"***REDACTED***" in redacted
    conf = parse_extensions_config(redacted)
    for handler in conf.handlers:
        for s in handler.settings:
            assert s.protected_settings in (None, "***REDACTED***")
    assert parse_extensions_config(raw).redacted == redacted


@pytest.mark.parametrize("name", ["manifest.xml", "manifest_deletion.xml", "manifest_vm_access.xml",
                                  "ga_manifest.xml", "ga_manifest_no_upgrade.xml",
                                  "ga_manifest_no_uris.xml"])
def test_manifests(fixtures_dir, name):
    packages = parse_manifest((fixtures_dir / "wire" / name).read_bytes())
    assert packages and all(p.version for p in packages)


def test_manifest_internal_and_disallow(fixtures_dir):
    packages = parse_manifest((fixtures_dir / "wire" / "manifest.xml").read_bytes())
    assert any(p.internal for p in packages)
    assert any(p.disallow_major_version_upgrade for p in packages)


names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.", min_size=1,
                max_size=20)
versions = st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z")


@settings(max_examples=150, deadline=None)
@given(name=names, version=versions, other=versions, seq=st.integers(0, 10 ** 6),
       state=st.sampled_from(["enabled", "disabled", "uninstall", "", "bogus"]),
       public=st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
def test_generated_single_config(name, version, other, seq, state, public):
    import json
    from xml.sax.saxutils import escape, quoteattr
    settings_json = json.dumps({"runtimeSettings": [{"handlerSettings": {"publicSettings": public}}]})
    xml = ('<Extensions><Plugins><Plugin name=%s version=%s state=%s location="http://a/m" />'
           '</Plugins><PluginSettings><Plugin name=%s version=%s>'
           '<RuntimeSettings seqNo="%d">%s</RuntimeSettings></Plugin></PluginSettings></Extensions>'
           % (quoteattr(name), quoteattr(version), quoteattr(state), quoteattr(name.upper()),
              quoteattr(other), seq, escape(settings_json)))
    (handler,) = parse_extensions_config(xml).handlers
    if state not in ("enabled", "disabled", "uninstall"):
        assert "state" in handler.invalid_reason
    elif other != version:
        assert "Version Mismatch" in handler.invalid_reason
    else:
        assert handler.valid
        assert handler.settings[0].sequence_number == seq
        assert handler.settings[0].public_settings == public


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_fixture_gives_a_record_or_a_document_error(fixtures_dir, data):
    raw = bytearray((fixtures_dir / "wire" / "ext_conf_multiple_extensions.xml").read_bytes())
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        parse_extensions_config(bytes(raw))
    except DocumentError:
        pass


# --- as waagent reads what the platform sends (issue 13 §8) ------------------------------------

@pytest.mark.parametrize("given, kept", [("Uninstall", "uninstall"), ("running", "running"),
                                         ("DISABLED", "disabled")])
def test_an_extension_runtime_settings_state_is_kept_lower_cased(given, kept):
    doc = MULTI.replace(b'name="secondRunCommand" state="disabled"',
                        b'name="secondRunCommand" state="%s"' % given.encode())
    (handler,) = parse_extensions_config(doc).handlers
    assert handler.valid, handler.invalid_reason
    assert [s.state for s in handler.settings] == ["enabled", kept]


TWO_ENTRIES = (b'{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"a":1}}},'
               b'{"handlerSettings":{"publicSettings":{"b":2},"protectedSettings":"MIIB",'
               b'"protectedSettingsCertThumbprint":"ABCD"}}]}')


def test_every_runtime_settings_entry_is_kept():
    """waagent makes one extension settings per entry of the runtimeSettings array."""
    single = b"""<Extensions version="1.0.0.0" goalStateIncarnation="3"><Plugins>
<Plugin name="A.B" version="1.0" location="http://a/m" state="enabled" />
</Plugins><PluginSettings><Plugin name="A.B" version="1.0">
<RuntimeSettings seqNo="5">%s</RuntimeSettings></Plugin></PluginSettings></Extensions>""" % TWO_ENTRIES
    (handler,) = parse_extensions_config(single).handlers
    assert handler.valid
    assert [(s.sequence_number, s.public_settings, s.protected_settings, s.certificate_thumbprint)
            for s in handler.settings] == [(5, {"a": 1}, None, None), (5, {"b": 2}, "MIIB", "ABCD")]
    multi = MULTI.replace(b'{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"a":1}}}]}',
                          TWO_ENTRIES)
    (handler,) = parse_extensions_config(multi).handlers
    assert handler.valid
    assert [(s.name, s.public_settings) for s in handler.settings] == [
        ("firstRunCommand", {"a": 1}), ("firstRunCommand", {"b": 2}), ("secondRunCommand", None)]


def test_an_absent_rsm_flag_is_absent_not_false(fixtures_dir):
    absent = parse_extensions_config((fixtures_dir / "wire" / "ext_conf.xml").read_bytes())
    prod = absent.ga_family("Prod")
    assert prod.is_version_from_rsm is None and prod.is_vm_enabled_for_rsm_upgrades is None
    false = parse_extensions_config(
        (fixtures_dir / "hostgaplugin" / "ext_conf-rsm_version_properties_false.xml").read_bytes())
    prod = false.ga_family("Prod")
    assert prod.is_version_from_rsm is False and prod.is_vm_enabled_for_rsm_upgrades is False
    true = parse_extensions_config((fixtures_dir / "wire" / "ext_conf_rsm_version.xml").read_bytes())
    prod = true.ga_family("Prod")
    assert prod.is_version_from_rsm is True and prod.is_vm_enabled_for_rsm_upgrades is True
