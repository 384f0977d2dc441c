"""The extensions worker's pure pieces: status files as waagent validates and truncates them
(§4.7), heartbeats (§4.8), the blob (§2), version selection (§4.3), dependency order (§4.11)
and the goal-state history caps."""

import json
import os

import pytest

from workers.extensions import packages, status as S
from workers.extensions.history import History
from workers.extensions.job import Job
from workers.platform.extensionsconfig import (ExtensionHandler, ExtensionSettings,
                                               ManifestPackage)


def _file(status="success", **more):
    st = {"name": "x", "operation": "Enable", "status": status, "code": 0,
          "formattedMessage": {"lang": "en-US", "message": "ok"}}
    st.update(more)
    return json.dumps([{"version": "1.0", "timestampUTC": "2026-01-01T00:00:00Z", "status": st}])


def test_a_valid_status_file_is_reported_as_written():
    st = S.extension_status("Test", 3, _file(substatus=[{"name": "a", "status": "success",
                                                          "code": 0}]), 10, None)
    assert st["status"] == "success" and st["formattedMessage"]["message"] == "ok"
    assert st["substatus"][0]["name"] == "a"


@pytest.mark.parametrize("text,why", [
    ("{not json", "malformed"), ('{"status": {}}', "malformed"),
    ('[{"version": "1.0"}]', "malformed"), ('[{"status": {"code": 0}}]', "malformed")])
def test_malformed_status_files_are_errors_1012(text, why):
    st = S.extension_status("Test", 0, text, len(text), None)
    assert (st["status"], st["code"]) == ("error", 1012)
    assert why in st["formattedMessage"]["message"]


def test_an_unknown_status_value_is_an_error():
    st = S.extension_status("Test", 0, _file("fabulous"), 10, None)
    assert st["status"] == "error"


def test_missing_status_file_is_transitioning_with_waagents_message():
    st = S.extension_status("Test", 2, None, -1, None)
    assert (st["status"], st["code"]) == ("transitioning", 0)
    assert "no status file was reported" in st["formattedMessage"]["message"]


def test_long_messages_and_substatus_are_truncated_as_waagent_does():
    big = "m" * 5000
    st = S.extension_status("Test", 0, _file(
        formattedMessage={"lang": "en-US", "message": big},
        substatus=[{"name": "n" * 20000, "status": "success", "code": 0,
                    "formattedMessage": {"lang": "en-US", "message": big * 4}}] * 30),
        200000, None)
    assert st["formattedMessage"]["message"].endswith(S.TRUNCATED)
    assert len(st["formattedMessage"]["message"]) == 1024 + len(S.TRUNCATED)
    assert len(st["substatus"][0]["name"]) == 10 * 1024 + len(S.TRUNCATED)
    assert len(json.dumps(st["substatus"])) <= S.STATUS_CAP
    assert 0 < len(st["substatus"]) < 30


def test_an_oversized_status_file_is_an_error_naming_its_size():
    st = S.extension_status("Test", 0, None, 1 << 20, "larger than 131072 bytes")
    assert st["status"] == "error" and "1048576" in st["formattedMessage"]["message"]


def test_heartbeat_rules():
    ok = json.dumps([{"heartbeat": {"status": "Ready", "code": 0,
                                    "formattedMessage": {"lang": "en-US", "message": "hi"}}}])
    assert S.heartbeat_status(ok, 5) == ("Ready", 0, "hi")
    assert S.heartbeat_status(ok, 601)[0] == "Unresponsive"
    assert S.heartbeat_status(None, None)[0] == "NotReady"
    assert S.heartbeat_status("[]", 1) == ("NotReady", -1, "heartbeat.log is malformed")


def test_blob_with_a_multi_config_handler_repeats_the_handler_per_extension():
    rep = S.HandlerReport("H", "1.0", "Ready", 0, "Plugin enabled", [
        S.ExtensionReport(1, {"status": "success", "code": 0}, "a"),
        S.ExtensionReport(2, {"status": "error", "code": 1}, "b")])
    doc = json.loads(S.vm_status([rep], {"status": "Success", "code": 0, "message": "ok"},
                                 fast_track=True))
    entries = doc["aggregateStatus"]["handlerAggregateStatus"]
    assert [e["runtimeSettingsStatus"]["extensionName"] for e in entries] == ["a", "b"]
    assert all(e["handlerName"] == "H" for e in entries)
    assert {"Key": "FastTrack", "Value": "1.0"} in doc["supportedFeatures"]
    assert doc["version"] == "1.1"


def test_messages_in_the_blob_lose_their_sas_signature():
    rep = S.HandlerReport("H", "1.0", "NotReady", 1004,
                          "download of https://a.blob.core.windows.net/c/p?sv=1&sig=SECRETSIG failed")
    assert b"SECRETSIG" not in S.vm_status([rep], None)


def test_version_selection_is_exact_and_numeric():
    pkgs = (ManifestPackage("1.10.0", ("u10",)), ManifestPackage("1.9", ("u9",)),
            ManifestPackage("1.2.0.0", ("u2",)))
    assert packages.select(pkgs, "1.9.0").uris == ("u9",)
    assert packages.select(pkgs, "1.2").uris == ("u2",)
    with pytest.raises(packages.PackageError) as e:
        packages.select(pkgs, "2.0")
    assert "Unable to find version 2.0 in manifest" in str(e.value)
    assert packages.version_key("1.10") > packages.version_key("1.9")


def _handler(name, state, level):
    return ExtensionHandler(name, "1.0", state, (), settings=(
        ExtensionSettings(0, None, "enabled", None, None, None, level),))


def test_dependency_order_puts_removals_first_in_reverse():
    hs = [_handler("c", "enabled", 2), _handler("a", "enabled", 0),
          _handler("x", "uninstall", 0), _handler("y", "disabled", 3),
          _handler("b", "enabled", 1)]
    assert [h.name for h in Job._ordered(hs)] == ["y", "x", "a", "b", "c"]


def test_history_is_capped_by_count_and_bytes(tmp_path):
    h = History(str(tmp_path / "history"), max_count=3, max_bytes=10 * 1024)
    for i in range(6):
        h.add(str(i), "", {"ExtensionsConfig.xml": b"x" * 100})
    assert len(os.listdir(tmp_path / "history")) == 3
    h = History(str(tmp_path / "h2"), max_count=50, max_bytes=10 * 1024)
    for i in range(8):
        h.add(str(i), "e%d" % i, {"doc": b"y" * 3000})
    names = sorted(os.listdir(tmp_path / "h2"))
    assert len(names) == 3 and names[-1].endswith("__7-e7")


def test_the_status_copy_is_rewritten_when_it_says_something_new(tmp_path):
    """Not on every poll: a copy whose only change is the time waits STATUS_COPY_PERIOD."""
    h = History(str(tmp_path / "history"), max_count=5, max_bytes=1 << 20)
    h.add("1", "", {"ExtensionsConfig.xml": b"<x/>"})
    copy = os.path.join(h.current, "waagent_status.json")

    def blob(t, status="Ready"):
        return json.dumps({"timestampUTC": t, "aggregateStatus": {"status": status,
                           "handlers": [{"timestampUTC": t}]}}).encode()

    h.save_status("waagent_status.json", blob("T1"), now=100.0)
    assert open(copy, "rb").read() == blob("T1")
    h.save_status("waagent_status.json", blob("T2"), now=106.0)       # only the time
    assert open(copy, "rb").read() == blob("T1")
    h.save_status("waagent_status.json", blob("T3", "NotReady"), now=112.0)   # news
    assert open(copy, "rb").read() == blob("T3", "NotReady")
    h.save_status("waagent_status.json", blob("T4", "NotReady"), now=171.9)
    assert open(copy, "rb").read() == blob("T3", "NotReady")
    h.save_status("waagent_status.json", blob("T5", "NotReady"), now=172.0)   # a minute on
    assert open(copy, "rb").read() == blob("T5", "NotReady")
    h.add("2", "", {"ExtensionsConfig.xml": b"<y/>"})                  # a new goal state
    h.save_status("waagent_status.json", blob("T6", "NotReady"), now=173.0)
    assert open(os.path.join(h.current, "waagent_status.json"), "rb").read() == \
        blob("T6", "NotReady")


def test_handler_manifest_quirks():
    m = packages.parse_handler_manifest(json.dumps([{"handlerManifest": {
        "enableCommand": "x.sh enable", "reportHeartbeat": "True",
        "continueOnUpdateFailure": "false", "updateMode": "UpdateWithoutInstall"}}]).encode())
    assert m.report_heartbeat and not m.continue_on_update_failure and not m.update_with_install
    assert packages.parse_handler_manifest(packages.manifest_json(m)) == m
    with pytest.raises(packages.PackageError) as e:
        packages.parse_handler_manifest(b"[]")
    assert e.value.code == 1003
