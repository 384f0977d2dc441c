"""The emulator's other shipped scenarios: FastTrack (vmSettings with ETag, page blob status) and
the flaky platform (a fault on every endpoint), which a caller gets through with the client's
own retries plus keeping the last good state on a bad document."""

import pathlib

import pytest

from tests.integration.platform.conftest import made_transport
from workers.platform import PlatformClient, reports
from workers.platform.errors import DocumentError, HttpError, ResourceGoneError

SCENARIOS = pathlib.Path(__file__).resolve().parents[3] / "emulator" / "scenarios"
STATUS = b'{"version": "1.1", "timestampUTC": "2026-01-01T00:00:00Z", "aggregateStatus": ' \
         b'{"guestAgentStatus": {"version": "2.15.0.1", "status": "Ready", "formattedMessage": ' \
         b'{"lang": "en-US", "message": "Guest Agent is running"}}, "handlerAggregateStatus": []}, ' \
         b'"guestOSInfo": {"computerName": "x", "osName": "Linux", "osVersion": "1", ' \
         b'"version": "2.15.0.1"}, "supportedFeatures": []}'


@pytest.fixture
def scenario(request, start_emulator_process):
    emu = start_emulator_process(["--scenario", str(SCENARIOS / request.param)])
    yield emu
    emu.stop()


@pytest.mark.parametrize("scenario", ["fasttrack.json"], indirect=True)
def test_fasttrack(scenario, tmp_path):
    client = PlatformClient.from_config(scenario.config(tmp_path / "state"))
    first = client.vm_settings()
    assert first.supported and first.changed and first.etag
    assert isinstance(first.document.get("extensionGoalStates"), list)
    again = client.vm_settings(first.etag)
    assert again.supported and not again.changed and again.etag == first.etag
    ext = client.full_goal_state().extensions_config
    assert ext.status_blob_type == "PageBlob"
    assert client.upload_status(STATUS, ext) == "hostplugin"
    state = scenario.state()
    assert state["counts"]["status"]["invalid"] == 0 and state["latest_status"]["blob_type"] == "PageBlob"


@pytest.mark.parametrize("scenario", ["flaky_platform.json"], indirect=True)
def test_flaky_platform(scenario, tmp_path):
    client = PlatformClient.from_config(scenario.config(tmp_path / "state", Protocol__HttpTimeout=1.5,
                                                        Protocol__ThrottledAttempts=8),
                                        transport=made_transport())
    client.detect()                                   # versions: reset, then fine
    gs = client.goal_state()                          # 500, 429 (Retry-After 1), then fine
    with pytest.raises(DocumentError):                # truncated ExtensionsConfig: keep the last good
        client.full_goal_state(gs)
    full = client.full_goal_state(gs)
    assert full.extensions_config.handler("Contoso.Demo.HelloWorld").valid
    assert client.certificates(gs)                    # 503 with Retry-After, then fine
    client.report_ready(gs)                           # InvalidContainer: refetch (the 2 s delay), retry
    with pytest.raises(ResourceGoneError):            # stale HostGAPlugin: refresh, stop this round
        client.upload_status(STATUS, full.extensions_config)
    assert client.upload_status(STATUS, full.extensions_config) == "hostplugin"
    with pytest.raises(HttpError):                    # 502 from vmSettings: one attempt, reported
        client.vm_settings()
    assert isinstance(client.imds.compute(), dict)    # 429 with Retry-After 2, then fine
    state = scenario.state()
    assert [h["document"]["state"] for h in state["received"]["health"]] == ["Ready"]
    assert not state["faults"]["pending"].get("goalstate")
    assert client.send_telemetry([reports.TelemetryEvent(reports.LOG_EVENTS_PROVIDER, 7,
                                                         (("EventName", "x"),))]) == 1
