"""Replay of the recorded wire/ fixtures: every host in them is rewritten to the emulator; the client
follows what it is served, decrypts certs.xml with the recorded transport key, and never opens a
connection to 168.63.129.16 or a storage host (the autouse loopback guard fails the test if it does)."""

import os

import pytest

from workers.platform import PlatformClient
from workers.platform.certificates import load_transport
from workers.platform.errors import DocumentError
from workers.platform.goalstate import parse_goal_state


@pytest.fixture(scope="module")
def replay(fixtures_dir, start_emulator_process):
    emu = start_emulator_process(["--replay", str(fixtures_dir / "wire")])
    try:
        yield emu
    finally:
        emu.stop()


def recorded_transport(fixtures_dir):
    """The recorded pair, as the broker hands it over: the key as a read-only descriptor."""
    wire = fixtures_dir / "wire"
    fd = os.open(str(wire / "trans_prv"), os.O_RDONLY)
    return load_transport(fd, (wire / "trans_cert").read_text())


def test_replayed_fixtures(replay, fixtures_dir, tmp_path, loopback_only):
    state_dir = tmp_path / "state"
    client = PlatformClient.from_config(replay.config(state_dir),
                                        transport=recorded_transport(fixtures_dir))
    client.detect()
    gs = client.goal_state()
    recorded = parse_goal_state((fixtures_dir / "wire" / "goal_state.xml").read_bytes())
    assert (gs.incarnation, gs.container_id, gs.role_instance_id) == (
        recorded.incarnation, recorded.container_id, recorded.role_instance_id)
    for url in (gs.hosting_environment_url, gs.shared_config_url, gs.extensions_config_url,
                gs.certificates_url):
        assert url.startswith("http://127.0.0.1:%d/" % replay.ws), url
    full = client.full_goal_state(gs)
    assert full.hosting_environment.vm_name == "MachineRole_IN_0"
    handler = full.extensions_config.handler("OSTCExtensions.ExampleHandlerLinux")
    local = "http://127.0.0.1:%d/" % replay.ws
    assert handler.valid and all(u.startswith(local) for u in handler.manifest_uris)
    assert full.extensions_config.status_upload_blob.startswith(local)
    records = client.certificates(gs)
    assert [r.thumbprint for r in records] == ["F6ABAA61098A301EBB8A571C3C7CF77F355F7FA9",
                                               "8979F1AC8C4215827BF3B5A403E6137B504D02A4"]
    client.report_ready(gs)
    assert client.upload_status(b'{"version": "1.1"}', full.extensions_config) in ("hostplugin", "direct")
    assert loopback_only and set(loopback_only) <= {"127.0.0.1"}


def test_unrewritten_urls_are_refused(replay, fixtures_dir, tmp_path):
    """A goal state whose URLs still name 168.63.129.16 is refused, not followed."""
    client = PlatformClient.from_config(replay.config(tmp_path / "state"),
                                        transport=recorded_transport(fixtures_dir))
    client.detect()
    recorded = parse_goal_state((fixtures_dir / "wire" / "goal_state.xml").read_bytes())
    with pytest.raises(DocumentError, match="not on the WireServer"):
        client.full_goal_state(recorded)
    with pytest.raises(DocumentError, match="not on the WireServer"):
        client.wire.certificates(recorded, client.transport())
