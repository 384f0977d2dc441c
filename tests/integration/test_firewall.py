"""The WireServer firewall (issue 14; protocol.md §9.4) with the real supervisor and monitoring
worker, inside a network namespace this test creates (tests/integration/wirenet.py): an address
of its own stands in for the WireServer, with an HTTP server and a DNS stand-in there.

Root and the guestagent-wire group connect, another user's process cannot, DNS on 53 can; rules
removed by hand come back within one period; a waagent rule set planted before start (nft table,
iptables security rules, waagent-network-setup.service and its script, firewalld
passthroughs) is replaced."""

import grp
import os
import pwd

import pytest

from tests.integration.supervisor_harness import accounts, make_agent  # noqa: F401
from tests.integration.wirenet import (WIRE, connect, firewall_conf, ns_run, our_table,
                                       start_in, wait_for, wirenet)  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

PERIOD = 3


def ids():
    wire = grp.getgrnam("guestagent-wire").gr_gid
    nobody = pwd.getpwnam("nobody")
    return wire, nobody.pw_uid, nobody.pw_gid


def test_root_and_the_wire_group_connect_others_only_to_dns(wirenet, make_agent):
    wire, nobody, nogroup = ids()
    # Before the agent: everybody connects (nothing here filters).
    assert connect(wirenet, nobody, nogroup) == "connected"
    agent = start_in(wirenet, make_agent(firewall_conf(PERIOD)))
    table = our_table(wirenet)
    assert table is not None, agent.log()
    assert "meta skgid %d accept" % wire in table, table
    assert connect(wirenet, 0, 0) == "connected"
    assert connect(wirenet, nobody, wire) == "connected"
    assert connect(wirenet, nobody, nogroup).startswith("blocked"), table
    assert connect(wirenet, nobody, nogroup, 53) == "connected"
    assert connect(wirenet, nobody, nogroup, 53, "udp") == "connected"
    # Installed by the supervisor at start, before its workers; then checked by monitoring.
    log = agent.log()
    assert "event=firewall_at_start address=%s backend=nft changed=1" % WIRE in log, log
    assert log.index("event=firewall_at_start") < log.index("event=spawn worker="), log
    wait_for(lambda: "event=firewall_rules address=%s" % WIRE in agent.log("monitoring"), 10,
             "monitoring's first round")


def rounds(agent):
    return agent.log().count("event=verb worker=monitoring verb=firewall.apply ")


def just_after_a_round(agent):
    """Returns right after monitoring's round: the next is a whole period away, so what the
    test breaks now stays broken long enough to be seen broken."""
    n = rounds(agent)
    wait_for(lambda: rounds(agent) > n, PERIOD + 3, "a monitoring round")


def test_rules_removed_by_hand_come_back_within_one_period(wirenet, make_agent):
    wire, nobody, nogroup = ids()
    agent = start_in(wirenet, make_agent(firewall_conf(PERIOD)))
    wait_for(lambda: "event=firewall_rules" in agent.log("monitoring"), 10, "the first round")
    just_after_a_round(agent)
    ns_run(wirenet, "nft", "delete", "table", "inet", "guestagent")
    assert connect(wirenet, nobody, nogroup) == "connected"     # the hole is real
    wait_for(lambda: our_table(wirenet), PERIOD + 2, "the table back")
    assert connect(wirenet, nobody, nogroup).startswith("blocked")
    assert connect(wirenet, nobody, wire) == "connected"
    wait_for(lambda: "event=firewall_repaired" in agent.log("monitoring"), 5, "the repair log")
    assert "installed nft table inet guestagent (was missing)" in agent.log("monitoring")
    # A rule changed by hand (the group's accept gone) is put back the same way.
    just_after_a_round(agent)
    handles = ns_run(wirenet, "nft", "-a", "list", "chain", "inet", "guestagent",
                     "output").stdout
    line = [x for x in handles.splitlines() if "skgid" in x][0]
    ns_run(wirenet, "nft", "delete", "rule", "inet", "guestagent", "output", "handle",
           line.rsplit(" ", 1)[1])
    assert connect(wirenet, nobody, wire).startswith("blocked")
    wait_for(lambda: "skgid %d" % wire in (our_table(wirenet) or ""), PERIOD + 2,
             "the group's rule back")
    assert connect(wirenet, nobody, wire) == "connected"
    assert "(was different)" in agent.log("monitoring")


WAAGENT_UNIT = """[Unit]
Description=Setup network rules for WALinuxAgent
After=local-fs.target
Before=network-pre.target
[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /var/lib/waagent/waagent-network-setup.py
RemainAfterExit=yes
[Install]
WantedBy=network.target
"""

PASSTHROUGHS = (
    "-t security -A OUTPUT -d {ws} -p tcp --destination-port 53 -j ACCEPT",
    "-t security -A OUTPUT -d {ws} -p tcp -m owner --uid-owner 0 -j ACCEPT",
    "-t security -A OUTPUT -d {ws} -p tcp -m conntrack --ctstate INVALID,NEW -j DROP",
    "-t filter -A OUTPUT -d 192.0.2.1 -j ACCEPT",     # not waagent's
)
DIRECT_XML = ('<?xml version="1.0" encoding="utf-8"?>\n<direct>\n' +
              "".join('  <passthrough ipv="ipv4">%s</passthrough>\n' % rule
                      for rule in PASSTHROUGHS) + "</direct>\n")


def plant_waagent(ns, sysroot, lib):
    """What a waagent VM captured as an image (or a waagent replaced in place) leaves."""
    r = ns_run(ns, "sh", "-c", "printf '%%s\\n' 'table ip walinuxagent {' 'chain output {' "
               "'type filter hook output priority 0; policy accept;' 'ip daddr %s tcp dport "
               "!= 53 skuid != 0 ct state invalid,new counter drop' '}' '}' | nft -f -" % WIRE,
               check=False)
    assert r.returncode == 0, r.stderr
    for rule in (["-p", "tcp", "--destination-port", "53", "-j", "ACCEPT"],
                 ["-p", "tcp", "-m", "owner", "--uid-owner", "0", "-j", "ACCEPT"],
                 ["-p", "tcp", "-m", "conntrack", "--ctstate", "INVALID,NEW", "-j", "DROP"]):
        ns_run(ns, "iptables", "-w", "-t", "security", "-A", "OUTPUT", "-d", WIRE, *rule)
    units = os.path.join(sysroot, "etc/systemd/system")
    os.makedirs(os.path.join(units, "network.target.wants"))
    with open(os.path.join(units, "waagent-network-setup.service"), "w") as f:
        f.write(WAAGENT_UNIT)
    os.symlink("../waagent-network-setup.service",
               os.path.join(units, "network.target.wants", "waagent-network-setup.service"))
    os.makedirs(lib, exist_ok=True)
    with open(os.path.join(lib, "waagent-network-setup.py"), "w") as f:
        f.write("# waagent's\n")
    os.makedirs(os.path.join(sysroot, "etc/firewalld"))
    with open(os.path.join(sysroot, "etc/firewalld/direct.xml"), "w") as f:
        f.write(DIRECT_XML.format(ws=WIRE))


def test_a_waagent_rule_set_planted_before_start_is_replaced(wirenet, make_agent):
    wire, nobody, nogroup = ids()
    if not os.path.exists("/usr/sbin/iptables"):
        pytest.fail("iptables is not installed (make deps installs it)")
    agent = make_agent(firewall_conf(PERIOD))
    sysroot, lib = os.path.join(agent.dir, "sysroot"), os.path.join(agent.dir, "lib")
    agent.write_conf(dict(firewall_conf(PERIOD), **{"OS.SysRoot": sysroot}))
    plant_waagent(wirenet, sysroot, lib)
    # waagent's rules admit uid 0 only: our workers' group is locked out.
    assert connect(wirenet, nobody, wire).startswith("blocked")
    start_in(wirenet, agent)
    assert connect(wirenet, nobody, wire) == "connected"
    assert connect(wirenet, 0, 0) == "connected"
    assert connect(wirenet, nobody, nogroup).startswith("blocked")
    tables = ns_run(wirenet, "nft", "list", "tables").stdout
    assert "table ip walinuxagent" not in tables, tables
    security = ns_run(wirenet, "iptables", "-t", "security", "-S", "OUTPUT").stdout
    assert WIRE not in security, security
    units = os.path.join(sysroot, "etc/systemd/system")
    assert not os.path.lexists(os.path.join(units, "waagent-network-setup.service"))
    assert not os.path.lexists(os.path.join(units, "network.target.wants",
                                            "waagent-network-setup.service"))
    assert not os.path.exists(os.path.join(lib, "waagent-network-setup.py"))
    direct = open(os.path.join(sysroot, "etc/firewalld/direct.xml")).read()
    assert WIRE not in direct, direct
    assert "-t filter -A OUTPUT -d 192.0.2.1 -j ACCEPT" in direct     # not waagent's: kept
    changes = [x for x in agent.log().splitlines() if "event=firewall_changed" in x]
    for what in ("removed waagent's nft table ip walinuxagent",
                 "removed waagent's iptables rule: security -A OUTPUT -d %s/32" % WIRE,
                 "waagent-network-setup.service", "waagent-network-setup.py",
                 "removed firewalld passthrough -t security -A OUTPUT -d %s" % WIRE,
                 "installed nft table inet guestagent (was missing)"):
        assert any(what in x for x in changes), (what, changes)
    assert sum("removed waagent's iptables rule" in x for x in changes) == 3, changes


IPTABLES_ROUND = r"""
import json, sys, threading
import config
from supervisor import broker
from supervisor.privileged import firewall
conf = config.load(sys.argv[1], report=False)
ctx = broker.Context("monitoring", conf, threading.Event())
out = []
for _ in range(2):
    firewall.STATE.last = None          # two real rounds, not the flood guard's answer
    out.append(firewall.apply(ctx, {}))
print(json.dumps(out))
"""


def test_without_nft_the_same_rules_are_made_with_iptables(wirenet, make_agent):
    """A host without the nft command: the broker's handler (run as the broker runs it, as root
    in the namespace) makes the rules with iptables, once; the second round changes nothing."""
    import json
    from tests.integration.supervisor_harness import PYTHON
    wire, nobody, nogroup = ids()
    agent = make_agent(firewall_conf(PERIOD))
    # nft hidden in a mount namespace of its own: /dev/null over it is no executable.
    r = ns_run(wirenet, "unshare", "--mount", "sh", "-c",
               'mount --bind /dev/null "$(command -v nft)" && exec "$0" -c "$1" "$2"',
               PYTHON, IPTABLES_ROUND, agent.conf, check=False)
    assert r.returncode == 0, r.stderr
    first, second = json.loads(r.stdout)
    assert first["backend"] == "iptables" and first["address"] == WIRE, first
    assert first["changed"] == ["installed iptables chain guestagent-wire (was missing)"], first
    assert second["changed"] == [], second
    assert connect(wirenet, 0, 0) == "connected"
    assert connect(wirenet, nobody, wire) == "connected"
    assert connect(wirenet, nobody, nogroup).startswith("blocked")
    assert connect(wirenet, nobody, nogroup, 53) == "connected"
    assert connect(wirenet, nobody, nogroup, 53, "udp") == "connected"
    chain = ns_run(wirenet, "iptables", "-t", "filter", "-S", "guestagent-wire").stdout
    assert "--gid-owner %d" % wire in chain, chain
    jumps = ns_run(wirenet, "iptables", "-t", "filter", "-S", "OUTPUT").stdout
    assert jumps.count("-j guestagent-wire") == 1, jumps
