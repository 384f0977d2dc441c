"""The attack hook itself: a worker's code replaced by a script, under the worker's own uid,
on its own channel; a denied verb still ends it (DESIGN.md principle 5)."""

import os
import pwd


def test_attack_runs_as_the_worker_and_a_denied_verb_ends_it(agent):
    records = agent.attack("monitoring", """
report("uid", os.getuid())
attempt("control.stop", {"worker": "extensions"})
""")
    by_key = {r["key"]: r["value"] for r in records}
    assert by_key["uid"] == pwd.getpwnam("guestagent-mon").pw_uid
    # Denied: the supervisor ends the worker at once, so the reply never comes.
    assert "control.stop" not in by_key or by_key["control.stop"][0] == "closed"
    assert records[-1]["key"] == "killed"
    assert "event=security" in agent.log("supervisor")
    assert agent.worker("extensions")["state"] == "RUNNING"
