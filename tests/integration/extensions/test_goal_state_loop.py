"""The goal-state loop and the status blob against the emulator (issue 13 §1, §6, §9)."""

import json
import os
import time

from emulator.confinement import ConfinedHost
from tests.integration.extensions.conftest import (FAST, ExtensionsPlatform, ext_status,
                                                   write_scenario)
from tests.integration.supervisor_harness import wait_for


def _agentctl_status(host):
    r = host.run_inside([os.path.join(os.environ.get("GUESTAGENT_VENV", "/opt/guestagent"),
                                      "bin", "agentctl"), "status", "--json"])
    return {w["name"]: w for w in json.loads(r.stdout)["workers"]}


def test_blob_says_agent_ready_with_no_extension_and_is_uploaded_every_loop(platform, make_host):
    host = make_host()
    doc = wait_for(platform.latest, 40, 0.1, "a status blob")
    agg = doc["aggregateStatus"]
    assert agg["guestAgentStatus"]["status"] == "Ready"
    assert agg["guestAgentStatus"]["version"].startswith("2.")
    assert agg["handlerAggregateStatus"] == []
    assert {"Key": "MultipleExtensionsPerHandler", "Value": "1.0"} in doc["supportedFeatures"]
    assert doc["guestOSInfo"]["version"] == agg["guestAgentStatus"]["version"]
    gsa = agg["vmArtifactsAggregateStatus"]["goalStateAggregateStatus"]
    assert (gsa["status"], gsa["code"]) == ("Success", 0)
    # Every loop (0.3 s here), with no goal-state change: several uploads, each valid.
    first = len(platform.uploads())
    time.sleep(2)
    uploads = platform.uploads()
    assert len(uploads) >= first + 3, len(uploads)
    assert all(u["valid"] for u in uploads), [u["errors"] for u in uploads if not u["valid"]][:2]
    # No GAFamily package was asked for: the agent never updates itself.
    assert "ga_family_ignored" in host.log("extensions")
    requests = platform.control("GET", "requests")["recent"]
    assert not [r for r in requests if "/ga/" in r.get("path", "")], requests[-5:]


def test_disable_agent_keeps_the_worker_idle_and_agentctl_says_so(platform, make_host):
    def disabled(host):
        lib = os.path.join(host.varlib, "waagent")
        os.makedirs(lib, 0o700, exist_ok=True)
        open(os.path.join(lib, "disable_agent"), "w").close()
    platform.add("Test.Good", "good")
    host = make_host(before=disabled)
    host.wait_log("event=extensions_idle reason=disable_agent", name="extensions")
    worker = wait_for(lambda: _agentctl_status(host).get("extensions"), 20, 0.2, "status")
    assert worker["state"] == "RUNNING"
    assert "disable_agent" in worker["message"], worker
    time.sleep(2)
    assert platform.latest() is None          # waagent's daemon sleeps forever: no blob
    assert not os.path.exists(os.path.join(host.varlib, "waagent", "Test.Good-1.0.0"))


def test_extensions_disabled_reports_every_handler_not_processed(platform, make_host):
    platform.add("Test.Good", "good", public_settings={"a": 1})
    host = make_host({"Extensions.Enabled": "n"})
    entry = platform.wait_handler("Test.Good", lambda e: e["code"] == 1009, host=host)
    assert entry["status"] == "NotReady"
    assert "extension processing is disabled" in entry["formattedMessage"]["message"]
    assert ext_status(entry)["status"] == "error"
    assert not os.path.exists(os.path.join(host.varlib, "waagent", "Test.Good-1.0.0"))
    assert platform.latest()["aggregateStatus"]["guestAgentStatus"]["status"] == "Ready"


def test_a_goal_state_that_fails_to_parse_keeps_the_last_good_one(platform, make_host):
    platform.add("Test.Good", "good", public_settings={"a": 1})
    host = make_host()
    platform.wait_handler("Test.Good", lambda e: ext_status(e).get("status") == "success",
                          host=host)
    # The next ExtensionsConfig is garbage: reported, and the last good one is kept.
    platform.faults({"extensionsConfig": [{"kind": "malformed_xml"}]})
    platform.control("POST", "incarnation", {})

    def failed():
        doc = platform.latest()
        gsa = doc["aggregateStatus"]["vmArtifactsAggregateStatus"]["goalStateAggregateStatus"]
        return doc if gsa["status"] == "Failed" else None
    doc = wait_for(failed, 30, 0.1, "the parse failure reported")
    gsa = doc["aggregateStatus"]["vmArtifactsAggregateStatus"]["goalStateAggregateStatus"]
    assert "could not be parsed" in gsa["formattedMessage"]["message"]
    entry = [h for h in doc["aggregateStatus"]["handlerAggregateStatus"]
             if h["handlerName"] == "Test.Good"][0]
    assert entry["status"] == "Ready" and ext_status(entry)["status"] == "success"
    assert "goal_state_invalid" in host.log("extensions")


def test_extension_handling_on_hold_installs_nothing(folder, make_host):
    emu = ExtensionsPlatform(write_scenario(folder, in_vm_artifacts_profile={"onHold": True}))
    try:
        values = dict(emu.conf())
        values.update(FAST)
        host = ConfinedHost(values)
        try:
            host.start()
            emu.add("Test.Good", "good")
            host.wait_log("event=extensions_on_hold", name="extensions")
            doc = wait_for(emu.latest, 20, 0.1, "a blob")
            gsa = doc["aggregateStatus"]["vmArtifactsAggregateStatus"]["goalStateAggregateStatus"]
            assert gsa["formattedMessage"]["message"] == "Extension handling is on hold"
            time.sleep(1)
            assert not os.path.exists(os.path.join(host.varlib, "waagent", "Test.Good-1.0.0"))
        finally:
            host.close()
    finally:
        emu.stop()


def _ops(host, handler):
    try:
        with open(os.path.join(host.log_dir, "azure", handler, "ops.log")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _success(entry):
    return entry["status"] == "Ready" and ext_status(entry).get("status") == "success"


def test_initial_goal_state_period_until_the_first_goal_state_converges(platform, make_host):
    # The extension's enable says "transitioning" and its success comes 3 s later: the
    # regular period (120 s) is far longer than the test, so only InitialGoalStatePeriod (1 s)
    # brings the success into the blob; once that goal state has converged (every extension
    # terminal) the loop turns at the regular period.
    platform.add("Test.Late", "late")
    host = make_host({"Extensions.GoalStatePeriod": "120",
                      "Extensions.InitialGoalStatePeriod": "1"})
    platform.wait_handler("Test.Late", lambda e: ext_status(e).get("status") == "transitioning",
                          timeout=60, host=host)
    assert "initial_goal_state_converged" not in host.log("extensions")
    entry = platform.wait_handler("Test.Late", _success, timeout=30, host=host)
    assert ext_status(entry)["formattedMessage"]["message"] == "late enabled seq 0"
    wait_for(lambda: "initial_goal_state_converged" in host.log("extensions"), 20, 0.2,
             "the first goal state converged")
    time.sleep(1.5)   # the turn after the one that converged may still be on its way
    before = len(platform.uploads())
    time.sleep(5)
    assert len(platform.uploads()) == before, "uploads at the 1 s period after convergence"
    assert os.path.exists(os.path.join(host.varlib, "guestagent", "extensions",
                                       "initial_goal_state"))


def test_wait_for_cloud_init_holds_extensions_until_it_finishes(platform, make_host):
    platform.add("Test.Good", "good")
    host = make_host({"Extensions.WaitForCloudInit": "y"},
                     before=lambda h: h.enable_cloud_init(b"", host_key=False))
    wait_for(lambda: "cloud_init_waiting" in host.log("extensions"), 40, 0.2, "the wait")
    # The status blob still goes up every loop; no command of the extension runs.
    first = len(platform.uploads())
    wait_for(lambda: len(platform.uploads()) >= first + 5, 20, 0.1, "uploads while waiting")
    assert _ops(host, "Test.Good") == ""
    assert not platform.handler_entries("Test.Good")
    # cloud-init writes /run/cloud-init/result.json at its end: the extension runs.
    r = host.run_inside(["sh", "-c", "mkdir -p /run/cloud-init && "
                         "echo '{\"v1\": {\"errors\": []}}' > /run/cloud-init/result.json"])
    assert r.returncode == 0, r.stderr
    platform.wait_handler("Test.Good", _success, timeout=40, host=host)
    assert [line.split()[0] for line in _ops(host, "Test.Good").splitlines()] == \
        ["install", "enable"]
    assert "cloud_init_completed marker=/run/cloud-init/result.json" in host.log("extensions")


def test_wait_for_cloud_init_gives_up_at_its_timeout(platform, make_host):
    platform.add("Test.Good", "good")
    host = make_host({"Extensions.WaitForCloudInit": "y",
                      "Extensions.WaitForCloudInitTimeout": "3"},
                     before=lambda h: h.enable_cloud_init(b"", host_key=False))
    platform.wait_handler("Test.Good", _success, timeout=60, host=host)
    log = host.log("extensions")
    assert "cloud_init_waiting timeout=3s" in log and "cloud_init_wait_timeout" in log, log


def test_wait_for_cloud_init_without_cloud_init_does_not_wait(platform, make_host):
    platform.add("Test.Good", "good")
    host = make_host({"Extensions.WaitForCloudInit": "y",
                      "Extensions.WaitForCloudInitTimeout": "3600"})
    platform.wait_handler("Test.Good", _success, timeout=40, host=host)
    assert "cloud_init_not_waited reason='cloud-init is not enabled'" in host.log("extensions")
