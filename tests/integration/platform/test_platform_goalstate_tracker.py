"""The goal state kept up to date as waagent keeps it (workers/platform/goalstate_tracker.py),
against the real emulator on 127.0.0.1 and the real client: FastTrack or Fabric chosen by
created-on time (never going back), vmSettings from Fabric ignored, and the tenant certificates
fetched again when a FastTrack goal state needs one the goal state does not have — what a VM
resumed from hibernation finds (a new certificate, the same incarnation)."""

import json
import pathlib
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.integration.platform.conftest import made_transport
from workers.platform import PlatformClient
from workers.platform.certificates import TransportCredentials
from workers.platform.extensionsconfig import ExtensionsConfig
from workers.platform.goalstate_tracker import GoalStateInconsistentError, GoalStateTracker
from workers.platform.vmsettings import VmSettingsGoalState

ROOT = pathlib.Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "emulator" / "scenarios"
WIRE = ROOT / "tests" / "data" / "walinuxagent" / "wire"
HGAP = ROOT / "tests" / "data" / "walinuxagent" / "hostgaplugin"
VMSETTINGS = ROOT / "tests" / "data" / "vmsettings"
# A certificate of wire/certs.xml (decrypts with wire/trans_prv).
FIXTURE_CERT = "F6ABAA61098A301EBB8A571C3C7CF77F355F7FA9"


def tracker_for(emu, tmp_path, transport=None, **conf):
    client = PlatformClient.from_config(emu.config(tmp_path / "state", **conf),
                                        transport=transport or made_transport())
    return GoalStateTracker(client, client.config)


def fixture_transport():
    key = serialization.load_pem_private_key((WIRE / "trans_prv").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((WIRE / "trans_cert").read_bytes())
    return TransportCredentials(key, cert)


def requests_to(emu, endpoint):
    return emu.state()["requests"]["by_endpoint"].get(endpoint, 0)


@pytest.fixture
def scenario(request, start_emulator_process):
    emu = start_emulator_process(["--scenario", str(SCENARIOS / request.param)])
    yield emu
    emu.stop()


@pytest.mark.parametrize("scenario", ["fasttrack.json"], indirect=True)
def test_the_newer_fasttrack_goal_state_is_chosen_and_kept(scenario, tmp_path):
    tracker = tracker_for(scenario, tmp_path)
    first = tracker.update()
    assert first.source == "FastTrack"
    assert isinstance(first.extensions_goal_state, VmSettingsGoalState)
    assert first.goal_state_changed and first.vm_settings_changed and first.extensions_changed
    expected = {c["thumbprint"] for c in scenario.state()["vm"]["certificates"]}
    assert first.certificates_changed and {c.thumbprint for c in first.certificates} == expected
    # nothing new: nothing changed, no document fetched again
    certificates_before = requests_to(scenario, "certificates")
    again = tracker.update()
    assert not (again.goal_state_changed or again.vm_settings_changed or again.extensions_changed
                or again.certificates_changed)
    assert again.extensions_goal_state is first.extensions_goal_state
    assert requests_to(scenario, "certificates") == certificates_before


@pytest.mark.parametrize("scenario", ["fasttrack.json"], indirect=True)
def test_debug_enable_fast_track_n_keeps_to_the_wireserver(scenario, tmp_path):
    tracker = tracker_for(scenario, tmp_path, Debug__EnableFastTrack=False)
    update = tracker.update()
    assert update.source == "Fabric" and not update.vm_settings_changed
    assert requests_to(scenario, "hgap_vmSettings") == 0


def test_vm_settings_from_fabric_are_ignored(emulator, tmp_path):
    emulator.reset()
    update = tracker_for(emulator, tmp_path).update()     # default.json: vm_settings "fabric"
    assert update.source == "Fabric"
    assert type(update.extensions_goal_state) is ExtensionsConfig
    assert requests_to(emulator, "hgap_vmSettings") >= 1


def replay_folder(tmp_path, vm_settings):
    """A recorded goal state (the upstream fixtures) whose vmSettings is `vm_settings`."""
    folder = tmp_path / "replay"
    folder.mkdir(parents=True)
    shutil.copy(WIRE / "goal_state.xml", folder / "GoalState.xml")
    shutil.copy(WIRE / "hosting_env.xml", folder / "HostingEnvironmentConfig.xml")
    shutil.copy(WIRE / "shared_config.xml", folder / "SharedConfig.xml")
    shutil.copy(WIRE / "certs.xml", folder / "Certificates.xml")
    # the twin documents of one goal state: ExtensionsConfig made at 637726657706205217 ticks,
    # the FastTrack vmSettings at 637726699999999999 (later)
    shutil.copy(HGAP / "ext_conf-agent_family_version.xml", folder / "ExtensionsConfig.xml")
    (folder / "VmSettings.json").write_text(json.dumps(vm_settings))
    return folder


def fasttrack_doc(ticks=None, thumbprint=FIXTURE_CERT):
    doc = json.loads((VMSETTINGS / "vm_settings-agent_family_version.json").read_text())
    if ticks is not None:
        doc["extensionsLastModifiedTickCount"] = ticks
    if thumbprint is not None:
        for egs in doc["extensionGoalStates"]:
            for settings in egs.get("settings") or ():
                if settings.get("protectedSettingsCertThumbprint"):
                    settings["protectedSettingsCertThumbprint"] = thumbprint
    return doc


@pytest.mark.parametrize("ticks, chosen", [(None, "FastTrack"), (637726600000000000, "Fabric")],
                         ids=["fasttrack-newer", "fasttrack-older"])
def test_the_extensions_goal_state_is_the_newer_by_created_on_time(
        start_emulator_process, tmp_path, ticks, chosen):
    emu = start_emulator_process(["--replay", str(replay_folder(tmp_path, fasttrack_doc(ticks)))])
    try:
        update = tracker_for(emu, tmp_path, transport=fixture_transport()).update()
        assert update.source == chosen
        assert FIXTURE_CERT in [c.thumbprint for c in update.certificates]
    finally:
        emu.stop()


def test_a_missing_certificate_refreshes_the_goal_state_once_then_says_so(
        start_emulator_process, tmp_path):
    """The real FastTrack document names a certificate (BD447E...) the recorded Certificates
    do not hold: the whole goal state is fetched again at once, then the update fails."""
    emu = start_emulator_process(["--replay", str(replay_folder(
        tmp_path, fasttrack_doc(thumbprint=None)))])
    try:
        tracker = tracker_for(emu, tmp_path, transport=fixture_transport())
        with pytest.raises(GoalStateInconsistentError, match="BD447EF71C3ADDF7C837E84D630F3FAC22CCD22F"):
            tracker.update()
        assert requests_to(emu, "certificates") == 2      # fetched, then fetched again
        assert requests_to(emu, "extensionsConfig") == 2
        # the state is kept: the next update goes on with it (as waagent)
        update = tracker.update()
        assert update.source == "FastTrack" and not update.extensions_changed
    finally:
        emu.stop()


@pytest.mark.parametrize("scenario", ["fasttrack.json"], indirect=True)
def test_after_hibernate_and_resume_the_new_certificates_are_fetched(scenario, tmp_path):
    tracker = tracker_for(scenario, tmp_path)
    first = tracker.update()
    incarnation = first.goal_state.incarnation
    old = {c.thumbprint for c in first.certificates}
    renewed = scenario.control("POST", "hibernate-resume")["result"]["thumbprints"]
    assert set(renewed) == old
    update = tracker.update()
    # the same incarnation, yet the new certificates: fetched because the FastTrack goal state
    # needed one the goal state did not have
    assert update.goal_state.incarnation == incarnation
    assert update.certificates_changed
    assert {c.thumbprint for c in update.certificates} == set(renewed.values())
    needed = {s.certificate_thumbprint for h in update.extensions_goal_state.handlers
              for s in h.settings if s.protected_settings}
    assert needed and needed <= set(renewed.values())
    assert all(c.has_private_key for c in update.certificates)


def test_a_new_incarnation_with_an_older_extensions_config_does_not_go_back(
        start_emulator_process, tmp_path):
    """After a FastTrack goal state, a new WireServer incarnation whose ExtensionsConfig was
    made earlier is not the extensions goal state: the newer one stays (protocol.md §1.14)."""
    first = start_emulator_process(["--replay", str(replay_folder(tmp_path / "a", fasttrack_doc()))])
    later = replay_folder(tmp_path / "b", fasttrack_doc())
    (later / "VmSettings.json").unlink()                  # this host serves no vmSettings
    goal_state = (later / "GoalState.xml").read_text()
    (later / "GoalState.xml").write_text(goal_state.replace(
        "<Incarnation>1</Incarnation>", "<Incarnation>2</Incarnation>").replace(
        "incarnation=1", "incarnation=2"))
    second = start_emulator_process(["--replay", str(later)])
    try:
        tracker = tracker_for(first, tmp_path, transport=fixture_transport())
        fast = tracker.update()
        assert fast.source == "FastTrack"
        # the same tracker, now fed by the second host
        tracker.client = PlatformClient.from_config(second.config(tmp_path / "state2"),
                                                    transport=fixture_transport())
        update = tracker.update()
        assert update.goal_state_changed and update.goal_state.incarnation == "2"
        assert not update.extensions_changed
        assert update.extensions_goal_state is fast.extensions_goal_state
        assert update.full.extensions_config is not None      # fetched, and older: skipped
    finally:
        first.stop()
        second.stop()


def test_a_host_without_vm_settings_is_asked_again_only_hours_later(start_emulator_process,
                                                                     tmp_path):
    scenario = json.loads((SCENARIOS / "default.json").read_text())
    scenario["vm_settings"] = "unsupported"
    for cert in scenario["certificates"]:
        for key in ("cert", "key"):
            cert[key] = str(SCENARIOS / cert[key])
    for ext in scenario["extensions"]:
        ext["handler"] = str(SCENARIOS / ext["handler"])
    path = tmp_path / "no_vm_settings.json"
    path.write_text(json.dumps(scenario))
    emu = start_emulator_process(["--scenario", str(path)])
    try:
        now = [1000.0]
        client = PlatformClient.from_config(emu.config(tmp_path / "state"),
                                            transport=made_transport())
        tracker = GoalStateTracker(client, client.config, clock=lambda: now[0])
        assert tracker.update().source == "Fabric"
        tracker.update()
        assert requests_to(emu, "hgap_vmSettings") == 1      # 404 once, then not asked
        now[0] += 6 * 3600 + 1
        tracker.update()
        assert requests_to(emu, "hgap_vmSettings") == 2
    finally:
        emu.stop()
