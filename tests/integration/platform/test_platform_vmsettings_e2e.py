"""vmSettings end to end: the real emulator serves it over HTTP on 127.0.0.1 and
PlatformClient.vm_settings() hands back the typed record with the emulator's ETag, the same
records the WireServer's ExtensionsConfig gives for the same goal state."""

import pathlib
import shutil

import pytest

from workers.platform import PlatformClient
from workers.platform.vmsettings import VmSettingsGoalState

ROOT = pathlib.Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "emulator" / "scenarios"
VMSETTINGS = ROOT / "tests" / "data" / "vmsettings"


@pytest.fixture
def scenario(request, start_emulator_process):
    emu = start_emulator_process(["--scenario", str(SCENARIOS / request.param)])
    yield emu
    emu.stop()


def shape(h):
    return (h.name, h.version, h.state, h.manifest_uris, h.is_multi_config, h.dependency_level,
            h.encoded_signature, h.invalid_reason,
            [(s.name, s.sequence_number, s.state, s.dependency_level, s.public_settings,
              s.protected_settings, s.certificate_thumbprint) for s in h.settings])


@pytest.mark.parametrize("scenario", ["fasttrack.json"], indirect=True)
def test_fasttrack_typed_record(scenario, tmp_path):
    client = PlatformClient.from_config(scenario.config(tmp_path / "state"))
    vms = client.vm_settings()
    assert vms.supported and vms.changed and vms.etag
    gs = vms.extensions_goal_state
    assert isinstance(gs, VmSettingsGoalState)
    assert gs.etag == vms.etag and gs.source == "FastTrack" and not gs.is_fabric
    assert gs.host_ga_plugin_version == "1.0.8.159"
    assert gs.status_blob_type == "PageBlob"
    assert gs.status_upload_blob.startswith("http://127.0.0.1:")
    hello = gs.handler("Contoso.Demo.HelloWorld")
    assert hello.valid and hello.version == "1.0.0" and hello.state == "enabled"
    (settings,) = hello.settings
    assert settings.public_settings == {"greeting": "fast"}
    assert settings.protected_settings and settings.certificate_thumbprint
    assert settings.protected_settings not in repr(vms) + repr(gs)
    # the same goal state through the WireServer: the same records
    ws = client.full_goal_state().extensions_config
    assert [shape(h) for h in ws.handlers] == [shape(h) for h in gs.handlers]
    assert (ws.status_upload_blob, ws.status_blob_type) == (gs.status_upload_blob,
                                                             gs.status_blob_type)
    # FastTrack goal states are the newer (emulator/platform.py FASTTRACK_LEAD_TICKS)
    assert gs.metadata.created_on > ws.metadata.created_on
    assert ws.ga_families == gs.ga_families
    # unchanged: 304, no record
    again = client.vm_settings(vms.etag)
    assert again.supported and not again.changed and again.extensions_goal_state is None


@pytest.mark.parametrize("scenario", ["multi_config.json"], indirect=True)
def test_fabric_multi_config_typed_record(scenario, tmp_path):
    client = PlatformClient.from_config(scenario.config(tmp_path / "state"))
    vms = client.vm_settings()
    gs = vms.extensions_goal_state
    assert gs.etag == vms.etag and gs.source == "Fabric" and gs.is_fabric
    assert gs.required_features == ("MultipleExtensionsPerHandler",)
    multi = gs.handler("Contoso.Demo.MultiHello")
    assert multi.valid and multi.is_multi_config
    assert [(s.name, s.sequence_number, s.state, s.dependency_level) for s in multi.settings] == [
        ("one", 0, "enabled", 2), ("two", 5, "enabled", 0), ("three", 1, "disabled", 0)]
    assert multi.settings[1].protected_settings and multi.settings[1].certificate_thumbprint
    assert multi.settings[2].public_settings is None
    hello = gs.handler("Contoso.Demo.HelloWorld")
    assert hello.dependency_level == 1 and hello.settings[0].sequence_number == 3
    assert gs.handler("Contoso.Demo.NoSettings").settings == ()
    ws = client.full_goal_state().extensions_config
    assert [shape(h) for h in ws.handlers] == [shape(h) for h in gs.handlers]


def test_upstream_fixture_replayed(fixtures_dir, start_emulator_process, tmp_path,
                                   loopback_only):
    """The upstream vm_settings-agent_family_version.json (HostGAPlugin 1.0.8.133, FastTrack)
    served by the emulator's replay mode, every storage host rewritten to the emulator."""
    folder = tmp_path / "recorded"
    folder.mkdir()
    for name in ("goal_state.xml", "hosting_env.xml", "shared_config.xml", "ext_conf.xml"):
        shutil.copy(fixtures_dir / "wire" / name, folder / name)
    shutil.copy(VMSETTINGS / "vm_settings-agent_family_version.json", folder / "vm_settings.json")
    emu = start_emulator_process(["--replay", str(folder)])
    try:
        client = PlatformClient.from_config(emu.config(tmp_path / "state"))
        client.goal_state()
        vms = client.vm_settings()
        gs = vms.extensions_goal_state
        assert vms.supported and gs.etag == vms.etag and gs.source == "FastTrack"
        assert gs.host_ga_plugin_version == "1.0.8.133"
        assert [h.name for h in gs.handlers] == [
            "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent",
            "Microsoft.Azure.Security.Monitoring.AzureSecurityLinuxAgent",
            "Microsoft.Azure.Extensions.CustomScript",
            "Microsoft.CPlat.Core.RunCommandHandlerLinux"]
        local = "http://127.0.0.1:%d/" % emu.ws
        assert all(u.startswith(local) for h in gs.handlers for u in h.manifest_uris)
        assert gs.status_upload_blob.startswith(local)
        assert all(f.version == "9.9.9.9" and f.is_vm_enabled_for_rsm_upgrades
                   for f in gs.ga_families)
        assert client.vm_settings(vms.etag).changed is False
    finally:
        emu.stop()
    assert set(loopback_only) <= {"127.0.0.1"}
