"""The monitoring worker's rows of issue 14 through the real supervisor, broker and worker
(tests/integration/supervisor_harness.py): the HealthService heartbeat against the emulator
(a real HTTP server on 127.0.0.1), the periodic OS checks on a fixture OS.SysRoot, and the
hostname monitor with the whole agent inside a network namespace with a DHCP server and a
UTS namespace of its own (tests/integration/test_boot_network.py's `net`)."""

import os
import subprocess
import time

from tests.integration.supervisor_harness import wait_for
from tests.integration.test_boot_network import NEW_NAME, carrier_changes, net  # noqa: F401


def received(emu, kind):
    return emu.state()["received"].get(kind, [])


def test_the_healthservice_heartbeat_arrives_on_its_period_with_waagents_body(make_agent, emu,
                                                                              tmp_path):
    lib = tmp_path / "lib"
    a = make_agent(dict(emu.conf(), **{"Lib.Dir": str(lib),
                                       "Protocol.HealthServicePeriod": "0.5"})).start()
    beats = wait_for(lambda: received(emu, "health_service")[2:] and
                     received(emu, "health_service"), 20, 0.1, "three heartbeats")
    for r in beats:
        assert r["valid"], r["errors"]
        doc = r["document"]
        assert (doc["Api"], doc["Version"], doc["Source"]) == ("reporttargethealth", "1.0",
                                                               "WALinuxAgent")
        assert [(o["ObservationName"], o["IsHealthy"]) for o in doc["Observations"]] == [
            ("GuestAgentPluginHeartbeat", True), ("InstanceMetadataHeartbeat", True)], doc
    # On its period: not one per heartbeat tick (0.2 s), not one in all.
    n = len(received(emu, "health_service"))
    time.sleep(2.0)
    assert 2 <= len(received(emu, "health_service")) - n <= 5
    assert "event=check_failed" not in a.log("monitoring"), a.log("monitoring")
    assert "healthservice=0.5s" in a.log("monitoring")


def test_a_failing_hostplugin_is_still_reported_healthy_within_five_minutes(make_agent, emu,
                                                                             tmp_path):
    """waagent's ErrorState: one failed /health is no outage (a false observation comes only
    after 5 minutes of them; the unit tests run that clock)."""
    emu.faults({"hgap_health": [{"kind": "status", "code": 500, "repeat": 1000}]})
    a = make_agent(dict(emu.conf(), **{"Lib.Dir": str(tmp_path / "lib"),
                                       "Protocol.HealthServicePeriod": "0.5"})).start()
    beats = wait_for(lambda: received(emu, "health_service")[1:] and
                     received(emu, "health_service"), 20, 0.1, "two heartbeats")
    assert all(r["document"]["Observations"][0]["IsHealthy"] is True for r in beats)
    fired = emu.state()["faults"]["fired"]
    assert sum(1 for f in fired if "hgap_health" in str(f)) >= 2, fired    # it did fail
    assert a.worker("monitoring")["state"] == "RUNNING"


def put(path, data=b"", mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def test_the_os_checks_are_reapplied_on_their_period(make_agent):
    """A SCSI timeout reset by hand and a persistent-net rule planted after boot are put back
    and moved within a period, by the same verbs as at boot."""
    a = make_agent()
    root = os.path.join(a.dir, "sysroot")
    put(os.path.join(root, "sys/block/sda/device/timeout"), b"30\n")
    a.write_conf({"OS.SysRoot": root, "OS.RootDeviceScsiTimeout": "300",
                  "OS.RootDeviceScsiTimeoutPeriod": "1", "OS.RemovePersistentNetRulesPeriod": "1",
                  "OS.MonitorDhcpClientRestartPeriod": "1"})
    a.start()
    timeout = os.path.join(root, "sys/block/sda/device/timeout")
    wait_for(lambda: open(timeout).read() == "300\n", 10, 0.1, "the boot's SCSI timeout")
    put(timeout, b"30\n")
    rules = os.path.join(root, "etc/udev/rules.d/70-persistent-net.rules")
    put(rules, b"# planted\n")
    wait_for(lambda: open(timeout).read() == "300\n", 5, 0.1, "the timeout re-applied")
    wait_for(lambda: not os.path.exists(rules), 5, 0.1, "the net rules moved")
    assert open(os.path.join(a.dir, "lib", "70-persistent-net.rules"), "rb").read() == \
        b"# planted\n"
    log = a.log("monitoring")
    assert "event=os_check check=scsi_timeouts timeout=300 devices=sda" in log
    assert ("event=os_check check=persistent_net_rules "
            "moved=etc/udev/rules.d/70-persistent-net.rules") in log
    # The route check ran too and left the network alone (Protocol.Endpoint is 127.0.0.1).
    assert "check=wireserver_route" not in log
    assert "event=security" not in a.log("supervisor")


def test_a_changed_hostname_is_published_by_dhcp_without_a_bounce(make_agent, net):  # noqa: F811
    """The whole agent in the client namespace with a UTS namespace of its own: the name is
    changed there by hand, the monitor sees it within a period, the broker sends the DHCP
    request carrying it, the interface stays up."""
    a = make_agent({"Provisioning.MonitorHostName": "y",
                    "Provisioning.MonitorHostNamePeriod": "1"})
    a.start(prefix=["ip", "netns", "exec", net["cli"], "unshare", "--uts"])
    record = os.path.join(a.dir, "lib", "published_hostname")
    wait_for(lambda: os.path.exists(record), 10, 0.1, "the monitor's first round")
    before = carrier_changes(net)
    assert NEW_NAME not in net["log"].read_text()
    subprocess.run(["nsenter", "--uts", "--target", str(a.proc.pid), "hostname", NEW_NAME],
                   check=True, timeout=10)
    wait_for(lambda: "DHCPACK(vsrv)" in net["log"].read_text() and
             NEW_NAME in net["log"].read_text(), 10, 0.1, "the DHCP server to see the name")
    log = net["log"].read_text()
    assert "client provides name: %s" % NEW_NAME in log, log
    wait_for(lambda: open(record).read() == NEW_NAME, 5, 0.1, "the broker's record")
    assert "event=hostname_published hostname=%s interface=vcli" % NEW_NAME in \
        a.log("monitoring")
    assert carrier_changes(net) == before
    # Published once: the next rounds see the same name and ask nothing.
    n = log.count("client provides name: %s" % NEW_NAME)
    time.sleep(2.5)
    assert net["log"].read_text().count("client provides name: %s" % NEW_NAME) == n
    assert os.uname().nodename != NEW_NAME          # the host's own name never changed
