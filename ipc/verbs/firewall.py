"""The WireServer firewall (reference/protocol.md §9.4; issue 14): one verb, no argument.

The monitoring worker asks on its period (OS.EnableFirewallPeriod) and the supervisor applies
it itself at start, before any worker runs. The broker decides everything from its own state:
the address (Protocol.Endpoint's IPv4 host, else 168.63.129.16), the group
(`guestagent-wire`, looked up by the broker), the tool (nft where the host has it, else
iptables). What a worker sends is never an address: the verb takes no argument at all.
"""

from ipc.schema import Bool, Enum, List, Obj, Str
from ipc.verbs import declare

APPLY = declare(
    "firewall.apply",
    """Install, or check and repair, the WireServer rules: to the WireServer address only
    root (uid 0) and members of guestagent-wire (gid match) may open connections, DNS
    (tcp/udp 53) stays open to everybody, every other new connection to it is dropped. Our own
    table (nft `inet guestagent`, or iptables chain `guestagent-wire` in table filter),
    replaced atomically and only when it differs. Rules a former waagent left (nft table
    `walinuxagent`, its iptables security-table rules, waagent-network-setup.service and its
    script, firewalld direct passthroughs) are removed. Returns the address, the tool, what
    was changed (empty: nothing) and the rules in force.""",
    result=Obj({"address": Str(64, 1), "backend": Enum("nft", "iptables"),
                "changed": List(Str(300), 32), "rules": List(Str(300), 32), "cached": Bool()}),
    timeout=60.0,
)
