"""Attacks on firewall.apply (issue 14): the verb takes no argument; the broker decides the
address, the group and the tool from its own state. The monitoring worker's code replaced (the
`attack` hook) naming an address, adding arguments, or flooding the verb; another worker calling
it. Everything runs in a network namespace the test creates (tests/integration/wirenet.py), and
the rules there are checked to be exactly the broker's afterwards."""

import grp

import pytest

from tests.integration.wirenet import (WIRE, firewall_conf, our_table, start_in,
                                       wirenet)  # noqa: F401

ELSEWHERE = "10.214.0.99"
ATTACKS = [
    {"address": ELSEWHERE},
    {"address": WIRE, "gid": 0},
    {"backend": "iptables"},
    {"rules": ["ip daddr %s accept" % WIRE]},
]


@pytest.fixture
def fw_agent(wirenet, make_agent):
    agent = start_in(wirenet, make_agent(firewall_conf(period=3600)))
    table = our_table(wirenet)
    assert table is not None, agent.log()
    return agent, wirenet, table


def assert_rules_are_the_brokers(ns, table):
    now = our_table(ns)
    assert now == table, now
    assert ELSEWHERE not in now
    assert "meta skgid %d accept" % grp.getgrnam("guestagent-wire").gr_gid in now


@pytest.mark.parametrize("args", ATTACKS, ids=["address", "gid", "backend", "rules"])
def test_arguments_end_the_worker_and_change_nothing(fw_agent, args):
    agent, ns, table = fw_agent
    records = agent.attack("monitoring", """
report("uid", os.getuid())
attempt("firewall.apply", %r)
""" % (args,))
    outcome = {r["key"]: r["value"] for r in records}.get("firewall.apply")
    assert outcome is None or outcome[0] == "closed", records
    assert records[-1]["key"] == "killed", records
    assert "event=security" in agent.log("supervisor")
    assert_rules_are_the_brokers(ns, table)


def test_without_arguments_the_answer_is_the_brokers_address(fw_agent):
    agent, ns, table = fw_agent
    records = agent.attack("monitoring", """
report("uid", os.getuid())
attempt("firewall.apply")
""")
    outcome = [r["value"] for r in records if r["key"] == "firewall.apply"][0]
    assert outcome[0] == "ok", records
    assert outcome[1]["address"] == WIRE and outcome[1]["changed"] == [], outcome
    assert records[-1]["key"] == "done", records
    assert_rules_are_the_brokers(ns, table)


def test_another_worker_is_refused(fw_agent):
    agent, ns, table = fw_agent
    records = agent.attack("extensions", """
report("uid", os.getuid())
attempt("firewall.apply")
""")
    assert records[-1]["key"] == "killed", records
    assert "extensions may not call firewall.apply" in agent.log("supervisor")
    assert_rules_are_the_brokers(ns, table)


def test_a_flood_runs_the_tools_rarely_and_ends_the_worker(fw_agent):
    """Hundreds of calls: the broker runs nft at most once a second (the rest answered from its
    last round), and the flood budget ends the worker; the rules and the supervisor stay."""
    agent, ns, table = fw_agent
    records = agent.attack("monitoring", """
import time
report("uid", os.getuid())
t0 = time.monotonic()
for i in range(600):
    counter = 100000 + i + 1
    channel.send(envelope.request(counter, "firewall.apply", {}))
    while True:
        msg, fds = channel.receive(time.monotonic() + 30)
        if isinstance(msg, envelope.Reply) and msg.id == counter:
            break
    if not msg.ok or not msg.result["cached"]:
        report("fresh", [round(time.monotonic() - t0, 3), msg.ok])
""", timeout=60)
    assert records[-1]["key"] == "killed", records
    fresh = [r["value"] for r in records if r["key"] == "fresh"]
    assert all(ok for _, ok in fresh), fresh
    seconds = fresh[-1][0] if fresh else 0.0
    # One fresh round a second at most (MIN_INTERVAL), plus the first.
    assert len(fresh) <= seconds + 2, fresh
    assert "event=security" in agent.log("supervisor") and "FLOOD" in agent.log("supervisor")
    assert agent.proc.poll() is None
    assert_rules_are_the_brokers(ns, table)
