"""Provisioning's telemetry (issue 14, protocol.md §1.11): when the broker closes the
provisioning gate with the marker written it writes waagent's `Provision` event into
`/var/lib/waagent/events`, and the monitoring worker sends it to the emulator."""

import json
import time

from tests.integration.provisioning.test_provisioning import provision


def test_a_provisioned_vm_reports_the_provision_event(emu, make_host):
    host = make_host({"Debug.EtpCollectionPeriod": "1"})
    assert "outcome='provisioned'" in provision(host)
    deadline = time.monotonic() + 30
    found = []
    while time.monotonic() < deadline and not found:
        for rec in emu.state()["received"].get("telemetry", []):
            for prov in (rec.get("document") or {}).get("providers", []):
                found += [e["params"] for e in prov["events"]
                          if e["params"].get("Operation") == "Provision"]
        time.sleep(0.2)
    assert len(found) == 1, (json.dumps(emu.state()["received"].get("telemetry"))[:2000],
                             host.log("monitoring")[-3000:])
    event = found[0]
    assert event["Name"] == "WALinuxAgent" and event["OperationSuccess"] == "True"
    assert event["Message"] == "Provisioning succeeded" and event["GAVersion"]
