"""The verb table and the spawner's state, attacked from inside a worker.

Verb declarations are NamedTuples (ipc/verbs/__init__.py) and the spawner can now be
`retired` (ipc/verbs/control.py). A worker whose code is replaced by an attack script, under
its own uid on its own channel, names a tuple's attributes as verbs, and after the spawner has
retired asks for the spawner's and the control verbs with the worst arguments it has: each is a
violation that ends it, no spawner comes back, nothing is started as root, and the other
workers run on. An admin member reads the state and can change nothing.
"""

import pwd
import re

import pytest

from ipc.envelope import VERB_RE
from tests.integration.security.test_control import ADMIN, admin_user  # noqa: F401
from tests.integration.supervisor_harness import RESIDENT, pid_alive, wait_for
from tests.integration.test_spawner import spawners


def _others_untouched(agent, before, attacker):
    for name, pid in before.items():
        if name != attacker:
            w = agent.worker(name)
            assert (w["state"], w["pid"]) == ("RUNNING", pid), w


# What a NamedTuple answers to that no verb is: the table is a dict of names, never an
# attribute lookup on a declaration. Bare names fail the envelope's shape (BAD_ENVELOPE),
# dotted ones the table (UNKNOWN_VERB): both end the worker.
@pytest.mark.parametrize("name", ["count", "_replace", "__class__", "0",
                                  "worker.count", "worker.index", "control._replace",
                                  "spawner._asdict", "worker.hello._replace",
                                  "worker.__class__", "worker.args"])
def test_a_tuple_attribute_named_as_a_verb_is_an_unknown_verb(agent, name):
    before = {n: agent.worker(n)["pid"] for n in RESIDENT}
    records = agent.attack("monitoring", """
report("uid", os.getuid())
attempt(%r, {"worker": "extensions"})
channel.notify(%r, {})
""" % (name, name))
    by_key = {r["key"]: r["value"] for r in records}
    assert by_key["uid"] == pwd.getpwnam("guestagent-mon").pw_uid
    assert name not in by_key or by_key[name][0] in ("closed", "error"), by_key
    assert records[-1]["key"] == "killed", records
    code = "UNKNOWN_VERB" if VERB_RE.fullmatch(name) else "BAD_ENVELOPE"
    assert re.search(r"event=security worker=monitoring pid=\d+ code=%s" % code,
                     agent.log()), agent.log()[-2000:]
    _others_untouched(agent, before, "monitoring")


@pytest.mark.parametrize("verb,args", [
    # The spawner's own order, on a worker's channel: fork a root "worker" running the
    # supervisor, into another worker's cgroup, with the descriptors it does not have.
    ("spawner.spawn", {"worker": "extensions", "module": "supervisor.daemon", "uid": 0,
                       "gid": 0, "env": {"PATH": "/tmp"}, "cgroup": "../../.."}),
    # Start the (retired) spawner again, or restart a worker so it is spawned anew.
    ("control.start", {"worker": "spawner"}),
    ("control.restart", {"worker": "extensions"}),
    ("control.status", {"worker": "../spawner"}),
])
def test_after_the_spawner_retired_a_worker_cannot_bring_it_back(make_agent, verb, args):
    agent = make_agent({"Agent.SpawnerRetireAfter": "1"}).start()
    sup = agent.status()["supervisor"]["pid"]
    [spawner] = spawners(sup)
    wait_for(lambda: not pid_alive(spawner), 15, 0.05, "the spawner retired")
    before = {n: agent.worker(n)["pid"] for n in RESIDENT}
    records = agent.attack("monitoring", """
report("uid", os.getuid())
attempt(%r, %r)
""" % (verb, args))
    by_key = {r["key"]: r["value"] for r in records}
    assert verb not in by_key or by_key[verb][0] == "closed", by_key
    assert records[-1]["key"] == "killed", records
    log = agent.log()
    assert re.search(r"event=security worker=monitoring pid=\d+ code=\w+", log), log[-2000:]
    _others_untouched(agent, before, "monitoring")
    # Nothing brought the spawner back; the attacker's replacement was fork+exec'd, under
    # its own uid, like any restart after the retirement.
    new = agent.wait_state("monitoring", "RUNNING", pid_not=before["monitoring"])
    assert spawners(sup) == [] and log.count("event=spawner_start") == 1
    status = agent.status()["spawner"]
    assert (status["state"], status["pid"]) == ("retired", None)
    assert re.search(r"event=spawn worker=monitoring pid=%d .*method=exec" % new["pid"],
                     agent.log())
    with open("/proc/%d/status" % new["pid"]) as f:
        uid = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
    assert uid == [str(pwd.getpwnam("guestagent-mon").pw_uid)] * 4


def test_an_admin_reads_the_retired_spawner_and_changes_nothing(make_agent, admin_user):  # noqa: F811
    agent = make_agent({"Agent.SpawnerRetireAfter": "1"}).start()
    wait_for(lambda: agent.status()["spawner"]["state"] == "retired", 15, 0.1,
             "the spawner retired")
    r = agent.ctl("status", user=ADMIN)
    assert r.returncode == 0 and re.search(r"^spawner\s+retired\s", r.stdout, re.M), r
    before = {n: agent.worker(n)["pid"] for n in RESIDENT}
    for args in (("start", "spawner"), ("restart", "extensions"), ("status", "spawner")):
        r = agent.ctl(*args, user=ADMIN)
        assert r.returncode != 0, (args, r.stdout)
    assert {n: agent.worker(n)["pid"] for n in RESIDENT} == before
    assert agent.status()["spawner"]["state"] == "retired"
    assert agent.log().count("event=spawner_start") == 1
