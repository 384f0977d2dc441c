"""Attacks on telemetry.collect (ipc/verbs/telemetry.py, supervisor/privileged/telemetry.py): a
real process under guestagent-mon, on its own channel, asks for event files while the folders
hold what an extension running as root (or anyone) could plant there — symlinks to root's
secrets as files and as folders, a FIFO, a hard link, a folder named like an event file (left
alone), the events folder of a handler the broker never installed — and gets only the regular
files of the broker's own folders. It cannot name a path, and no other worker may call the verb.
"""

import json
import os

import pytest

SECRET = "ROOT-SECRET-not-for-telemetry"
GOOD_ETP = json.dumps([{"EventLevel": "INFO", "Message": "fine", "Version": "1",
                        "TaskName": "t", "EventPid": "1", "EventTid": "1",
                        "OperationId": "o", "TimeStamp": "2024-01-01T00:00:00Z"}])

COLLECT_ALL = """
report("uid", os.getuid())
got, refused = {}, []
for _ in range(20):
    outcome = attempt("telemetry.collect", {})
    if outcome[0] != "ok":
        break
    for f in outcome[1]["files"]:
        got["%s/%s/%s" % (f["source"], f["handler"], f["name"])] = \\
            __import__("base64").b64decode(f["data"]).decode("utf-8", "replace")
    refused += outcome[1]["refused"]
    if not outcome[1]["more"]:
        break
report("got", got)
report("refused", refused)
"""


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def install(agent, name):
    """A handler folder as the broker leaves it (root's, with its run records)."""
    write(os.path.join(agent.dir, "lib", "%s-1.0.0" % name, "config", "GuestAgentRuns.json"),
          "[]", 0o600)


@pytest.fixture
def attacked(make_agent):
    agent = make_agent()
    agent.write_conf({"Extension.LogDir": os.path.join(agent.dir, "azure")})
    azure = os.path.join(agent.dir, "azure")
    secret = os.path.join(agent.dir, "rootonly")
    write(os.path.join(secret, "shadow"), SECRET + "\n", 0o600)
    write(os.path.join(secret, "events", "7.json"), SECRET, 0o600)
    os.chmod(secret, 0o700)
    install(agent, "Test.Good")
    install(agent, "Evil")
    os.makedirs(os.path.join(agent.dir, "lib", "Fake-1.0.0"))   # not the broker's: no records
    ev = os.path.join(azure, "Test.Good", "events")
    write(os.path.join(ev, "1.json"), GOOD_ETP)
    os.symlink(os.path.join(secret, "shadow"), os.path.join(ev, "2.json"))
    os.mkfifo(os.path.join(ev, "3.json"))
    os.link(os.path.join(secret, "shadow"), os.path.join(ev, "4.json"))
    os.makedirs(os.path.join(ev, "5.json"))
    write(os.path.join(ev, "6.json"), "x" * (200 * 1024))
    write(os.path.join(ev, "notes.txt"), SECRET)
    os.symlink(secret, os.path.join(azure, "Evil"))                 # a symlinked handler folder
    write(os.path.join(azure, "Fake", "events", "8.json"), SECRET)  # never installed
    write(os.path.join(azure, "Other", "events", "9.json"), SECRET)  # no folder at all
    agent_events = os.path.join(agent.dir, "lib", "events")
    os.makedirs(agent_events, 0o700)
    write(os.path.join(agent_events, "1.tld"), '{"eventId": 1}')
    os.symlink(os.path.join(secret, "shadow"), os.path.join(agent_events, "2.tld"))
    agent.start()
    return agent


def test_only_regular_files_of_the_brokers_own_folders_are_handed_over(attacked):
    records = attacked.attack("monitoring", COLLECT_ALL, timeout=60)
    assert records[-1]["key"] == "done", records
    got = {r["key"]: r["value"] for r in records}
    assert got["got"] == {"agent//1.tld": '{"eventId": 1}',
                          "extension/Test.Good/1.json": GOOD_ETP}, json.dumps(records)
    refused = {"%s/%s/%s" % (r["source"], r["handler"], r["name"]): r["why"]
               for r in got["refused"]}
    assert refused == {
        "agent//2.tld": "a symlink",
        "extension/Test.Good/2.json": "a symlink",
        "extension/Test.Good/3.json": "not a regular file",
        "extension/Test.Good/4.json": "a file with 2 links",
        "extension/Test.Good/6.json": "204800 bytes, over the 98304-byte cap"}, refused
    assert SECRET not in json.dumps(records)
    azure = os.path.join(attacked.dir, "azure")
    # Taken or refused: removed (the hard link only, never what it pointed at).
    assert sorted(os.listdir(os.path.join(azure, "Test.Good", "events"))) == ["5.json",
                                                                               "notes.txt"]
    assert os.listdir(os.path.join(attacked.dir, "lib", "events")) == []
    with open(os.path.join(attacked.dir, "rootonly", "shadow")) as f:
        assert f.read() == SECRET + "\n"
    # Nothing of the symlinked, the never-installed or the unknown handler was touched.
    assert os.listdir(os.path.join(attacked.dir, "rootonly", "events")) == ["7.json"]
    assert os.listdir(os.path.join(azure, "Fake", "events")) == ["8.json"]
    assert os.listdir(os.path.join(azure, "Other", "events")) == ["9.json"]


@pytest.mark.parametrize("args", [{"path": "/etc/shadow"}, {"handler": "../../etc"}])
def test_the_worker_names_no_path(attacked, args):
    records = attacked.attack("monitoring", """
report("uid", os.getuid())
attempt("telemetry.collect", %r)
""" % (args,))
    # INVALID_ARGS is a violation: the worker is ended before any reply.
    assert records[-1]["key"] == "killed", records
    assert "event=security" in attacked.log("supervisor")
    assert os.listdir(os.path.join(attacked.dir, "azure", "Test.Good", "events"))


def test_other_workers_may_not_collect_event_files(attacked):
    records = attacked.attack("extensions", """
report("uid", os.getuid())
attempt("telemetry.collect", {})
""")
    assert records[-1]["key"] == "killed", records
    assert "event=security" in attacked.log("supervisor")
    assert "1.json" in os.listdir(os.path.join(attacked.dir, "azure", "Test.Good", "events"))
