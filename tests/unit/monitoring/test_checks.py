"""The monitoring rows of issue 14 (hostname monitor, HealthService heartbeat, periodic OS
checks) as pure functions: what each asks of the broker and when. Their effect through the
real supervisor and broker is tested in tests/integration/monitoring/."""

import socket

import pytest

from config import defaults
from workers.monitoring import healthservice, hostname, job, oschecks
from workers.monitoring.check import Context


class Worker:
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def call(self, verb, args):
        self.calls.append((verb, args))
        return self.answers[verb], []


def conf(**kw):
    base = dict(Protocol__Endpoint="127.0.0.1:9")
    base.update(kw)
    return defaults().with_overrides(**base)


def test_the_table_holds_the_rows_with_their_waagent_keys():
    rows = {c.name: c.period_key for c in job.checks()}
    assert rows["hostname"] == "Provisioning.MonitorHostNamePeriod"
    assert rows["healthservice"] == "Protocol.HealthServicePeriod"
    assert rows["scsi_timeouts"] == "OS.RootDeviceScsiTimeoutPeriod"
    assert rows["persistent_net_rules"] == "OS.RemovePersistentNetRulesPeriod"
    assert rows["wireserver_route"] == "OS.MonitorDhcpClientRestartPeriod"


def test_what_a_configuration_wants():
    by = {c.name: c for c in job.checks()}
    c = conf()
    assert not by["hostname"].wanted(c)                      # MonitorHostName: code default n
    assert by["hostname"].wanted(conf(Provisioning__MonitorHostName=True))
    assert not by["scsi_timeouts"].wanted(c)                 # no timeout configured
    assert by["scsi_timeouts"].wanted(conf(OS__RootDeviceScsiTimeout=300))
    assert by["healthservice"].wanted(c)
    # The route only where the broker may add one: no endpoint (Azure) or the WireServer's.
    assert not by["wireserver_route"].wanted(c)
    assert by["wireserver_route"].wanted(conf(Protocol__Endpoint="168.63.129.16"))
    # No endpoint and not an Azure VM (a fixture root without the asset tag): nothing.
    bare = defaults().with_overrides(OS__SysRoot="/nonexistent", Provisioning__MonitorHostName=True,
                                     OS__RootDeviceScsiTimeout=300)
    assert not any(row.wanted(bare) for row in job.checks())


def sysroot(tmp_path, timeouts=(), rules=()):
    for disk, value in timeouts:
        path = tmp_path / "sys/block" / disk / "device/timeout"
        path.parent.mkdir(parents=True)
        path.write_text(value)
    for relative in rules:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("# rules\n")
    return str(tmp_path)


def test_an_os_check_leaves_its_first_round_to_provisioning_then_calls_its_verb(tmp_path):
    w = Worker({"boot.scsi_timeouts": {"timeout": 300, "devices": ["sda"]}})
    ctx = Context(w, conf(OS__SysRoot=sysroot(tmp_path, [("sda", "30\n")]),
                          OS__RootDeviceScsiTimeout=300))
    row = {c.name: c for c in oschecks.CHECKS}["scsi_timeouts"]
    row.run(ctx)
    assert w.calls == []
    row.run(ctx)
    row.run(ctx)
    assert w.calls == [("boot.scsi_timeouts", {})] * 2


def test_an_os_check_asks_the_broker_only_when_there_is_something_to_do(tmp_path):
    """Each round is a broker round trip: none while every SCSI timeout already is the
    configured one and no udev rule is there to move (issue 17's idle CPU)."""
    root = sysroot(tmp_path, [("sda", "300\n"), ("sdb", "300\n")])
    w = Worker({"boot.scsi_timeouts": {"timeout": 300, "devices": ["sda", "sdb"]},
                "boot.persistent_net_rules": {"moved": []}})
    ctx = Context(w, conf(OS__SysRoot=root, OS__RootDeviceScsiTimeout=300))
    rows = {c.name: c for c in oschecks.CHECKS}
    for _ in range(3):
        rows["scsi_timeouts"].run(ctx)
        rows["persistent_net_rules"].run(ctx)
    assert w.calls == []
    (tmp_path / "sys/block/sdb/device/timeout").write_text("30\n")     # reset by hand
    rows["scsi_timeouts"].run(ctx)
    assert w.calls == [("boot.scsi_timeouts", {})]
    sysroot(tmp_path, rules=["etc/udev/rules.d/70-persistent-net.rules"])
    rows["persistent_net_rules"].run(ctx)
    assert w.calls[-1] == ("boot.persistent_net_rules", {})
    # What the worker cannot read is the broker's to judge: it asks.
    (tmp_path / "sys/block/sdb/device/timeout").unlink()
    (tmp_path / "sys/block/sdb/device/timeout").mkdir()
    rows["scsi_timeouts"].run(ctx)
    assert w.calls[-1] == ("boot.scsi_timeouts", {}) and len(w.calls) == 3


def test_the_hostname_monitor_asks_only_when_the_name_changed(monkeypatch):
    names = iter(["a", "a", "b", "b"])
    monkeypatch.setattr(socket, "gethostname", lambda: next(names))
    w = Worker({"boot.publish_hostname": {"hostname": "x", "interface": None, "acked": False,
                                          "published": False}})
    ctx = Context(w, conf())
    for _ in range(4):
        hostname.run(ctx)
    # The first round asks (the broker takes the name as its baseline), then only the change.
    assert w.calls == [("boot.publish_hostname", {})] * 2


def test_a_failed_publication_is_asked_again_next_period(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "a")

    class Failing(Worker):
        def call(self, verb, args):
            self.calls.append(verb)
            raise RuntimeError("no default route")
    w = Failing({})
    ctx = Context(w, conf())
    for _ in range(2):
        with pytest.raises(RuntimeError):
            hostname.run(ctx)
    assert w.calls == ["boot.publish_hostname"] * 2


def test_a_heartbeat_turns_unhealthy_only_after_its_failures_lasted_long_enough():
    state = {}
    H = healthservice.HGAP
    assert healthservice.verdict(state, H, False, 0.0) is True
    assert healthservice.verdict(state, H, False, 299.0) is True
    assert healthservice.verdict(state, H, False, 300.0) is False
    assert healthservice.verdict(state, H, True, 301.0) is True          # recovered: reset
    assert healthservice.verdict(state, H, False, 302.0) is True
    I = healthservice.IMDS
    assert healthservice.verdict(state, I, False, 0.0) is True
    assert healthservice.verdict(state, I, False, 180.0) is False


def test_the_real_imds_is_never_probed_behind_an_emulated_wireserver():
    assert not healthservice.imds_wanted(conf())                          # 169.254.169.254
    assert healthservice.imds_wanted(conf(Protocol__ImdsEndpoint="127.0.0.1:8080"))
    assert healthservice.imds_wanted(defaults())                          # Azure: both real
    assert healthservice.imds_wanted(conf(Protocol__Endpoint="168.63.129.16"))
    assert not healthservice.imds_wanted(conf(Protocol__ImdsEndpoint=None))


def test_an_os_check_says_its_outcome_again_only_when_it_changed(caplog, tmp_path):
    """Re-applied every 30 s: the same outcome is one line, a new one another."""
    answers = iter([{"timeout": 300, "devices": ["sda"]}] * 3 + [{"timeout": 300,
                                                                 "devices": ["sda", "sdb"]}])

    class Seq(Worker):
        def call(self, verb, args):
            self.calls.append((verb, args))
            return next(answers), []

    caplog.set_level("INFO", logger="monitoring")
    ctx = Context(Seq({}), conf(OS__SysRoot=sysroot(tmp_path, [("sda", "30\n")]),
                                OS__RootDeviceScsiTimeout=300))
    row = {c.name: c for c in oschecks.CHECKS}["scsi_timeouts"]
    for _ in range(5):
        row.run(ctx)          # the first round is provisioning's
    said = [r.getMessage() for r in caplog.records if "os_check" in r.getMessage()]
    assert said == ["event=os_check check=scsi_timeouts timeout=300 devices=sda",
                    "event=os_check check=scsi_timeouts timeout=300 devices=sda,sdb"]
