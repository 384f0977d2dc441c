"""The WireServer firewall (ipc/verbs/firewall.py; reference/protocol.md §9.4).

What waagent installs admits uid 0 only, and would lock out our unprivileged workers; ours
admits root and the `guestagent-wire` group (the workers' primary group), leaves DNS (53, tcp
and udp) open to everybody and drops every other new connection to the WireServer:

    nft:      table inet guestagent { chain output { type filter hook output priority 0; ...
              ip daddr WS tcp dport 53 accept; ip daddr WS udp dport 53 accept;
              ip daddr WS meta skuid 0 accept; ip daddr WS meta skgid <wire gid> accept;
              ip daddr WS ct state invalid,new drop } }
    iptables: the same five rules in chain `guestagent-wire` of table filter, jumped to from
              OUTPUT for -d WS (a host without the nft command).

Everything is the broker's own knowledge: the address is Protocol.Endpoint's IPv4 host (a test
or an emulator says where its WireServer stands) or 168.63.129.16; the gid is looked up here.
Never a loopback address (that would firewall the machine's own services), and only on an Azure
VM or where Protocol.Endpoint names the address explicitly (boot.py's rule for the route).

The check is cheap and changes nothing that is right: the table is listed and compared with
the listing made right after our last install; only a difference (or no listing yet: the first
round after the supervisor starts) replaces it, in one nft transaction (no moment without the
rules). What a former waagent left is looked for every round and removed: its nft table
`ip walinuxagent`, its rules in iptables' security table (any rule to the address),
waagent-network-setup.service (which would put them back at boot) and its script, and
firewalld's permanent direct passthroughs. Every change is logged.

Persistence across reboots: the supervisor applies this at start, before it starts any worker
(supervisor/loop.py), and it starts at every boot; no unit of our own runs before it.
"""

import grp
import logging
import os
import re
import threading
import time
from typing import Dict, List, Optional, Tuple

from ipc.verbs import firewall as F
from supervisor.broker import Context, Privileged
from supervisor.privileged import atomic_write, fail, read_capped, run, which
from supervisor.privileged.boot import WIRESERVER, _refuse_unless_ours
from supervisor.table import WIRE_GROUP

log = logging.getLogger("guestagent.broker.firewall")

TABLE = ("inet", "guestagent")          # cli/deprovision.py FIREWALL_TABLES names it too
CHAIN = "guestagent-wire"               # the iptables chain (table filter)
WAAGENT_TABLE = ("ip", "walinuxagent")
NETWORK_SETUP_UNIT = "waagent-network-setup.service"
NETWORK_SETUP_SCRIPT = "waagent-network-setup.py"
UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
FIREWALLD_DIRECT = "etc/firewalld/direct.xml"
# A flood of calls runs the tools at most this often; the rest are answered from the last
# round (marked cached).
MIN_INTERVAL = 1.0
TOOL_TIMEOUT = 20.0


class _State:
    """The broker's memory between rounds (one supervisor process)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.installed: Dict[Tuple[str, str, int], str] = {}   # (tool, address, gid) -> listing
        self.last: Optional[dict] = None
        self.last_at = 0.0


STATE = _State()


def address(conf) -> str:
    """The WireServer address this broker protects: its own configuration, nothing else."""
    import ipaddress   # lazily: the idle supervisor never needs it
    endpoint = (conf["Protocol.Endpoint"] or "").strip()
    host = endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint
    try:
        ip = ipaddress.IPv4Address(host) if host else ipaddress.IPv4Address(WIRESERVER)
    except ValueError:
        # A name (an emulator's host name): the platform's address is what we protect.
        ip = ipaddress.IPv4Address(WIRESERVER)
        endpoint = ""
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        raise fail("the WireServer address %s is not one a firewall may guard" % ip)
    _refuse_unless_ours(conf, told=bool(endpoint))
    return str(ip)


def wire_gid() -> int:
    try:
        return grp.getgrnam(WIRE_GROUP).gr_gid
    except KeyError:
        raise fail("the group %s does not exist (the package's sysusers make it)"
                   % WIRE_GROUP) from None


def backend() -> str:
    if which("nft"):
        return "nft"
    if which("iptables"):
        return "iptables"
    raise fail("neither nft nor iptables is installed")


def _nft(args: List[str], ctx: Context, stdin: Optional[bytes] = None, check: bool = True
         ) -> Tuple[int, str]:
    return run(["nft"] + args, stdin=stdin, timeout=TOOL_TIMEOUT, cancel=ctx.cancel,
               check=check)


def _ipt(args: List[str], ctx: Context, check: bool = True) -> Tuple[int, str]:
    return run(["iptables", "-w"] + args, timeout=TOOL_TIMEOUT, cancel=ctx.cancel, check=check)


def rules(ws: str, gid: int) -> List[str]:
    """Our rules, in order, in nft's words."""
    return ["ip daddr %s tcp dport 53 accept" % ws,
            "ip daddr %s udp dport 53 accept" % ws,
            "ip daddr %s meta skuid 0 accept" % ws,
            "ip daddr %s meta skgid %d accept" % (ws, gid),
            "ip daddr %s ct state invalid,new drop" % ws]


def _ipt_rules(ws: str, gid: int) -> List[List[str]]:
    d = ["-d", ws + "/32"]
    return [d + ["-p", "tcp", "--dport", "53", "-j", "ACCEPT"],
            d + ["-p", "udp", "--dport", "53", "-j", "ACCEPT"],
            d + ["-m", "owner", "--uid-owner", "0", "-j", "ACCEPT"],
            d + ["-m", "owner", "--gid-owner", str(gid), "-j", "ACCEPT"],
            d + ["-m", "conntrack", "--ctstate", "INVALID,NEW", "-j", "DROP"]]


# ---- our table ------------------------------------------------------------------------------

def _nft_listing(ctx: Context) -> Optional[str]:
    code, out = _nft(["list", "table"] + list(TABLE), ctx, check=False)
    return out if code == 0 else None


def _nft_install(ctx: Context, ws: str, gid: int) -> None:
    family, name = TABLE
    body = "\n".join("    " + r for r in rules(ws, gid))
    # Made (if missing), emptied and filled in one transaction: never a moment without rules.
    script = ("table %s %s\ndelete table %s %s\ntable %s %s {\n  chain output {\n"
              "    type filter hook output priority 0; policy accept;\n%s\n  }\n}\n"
              % (family, name, family, name, family, name, body))
    _nft(["-f", "-"], ctx, stdin=script.encode())


def _ipt_listing(ctx: Context) -> Optional[str]:
    code, chain = _ipt(["-t", "filter", "-S", CHAIN], ctx, check=False)
    if code != 0:
        return None
    _, output = _ipt(["-t", "filter", "-S", "OUTPUT"], ctx)
    jumps = [line for line in output.splitlines() if line.endswith("-j " + CHAIN)]
    return chain + "\n" + "\n".join(jumps)


def _ipt_install(ctx: Context, ws: str, gid: int) -> None:
    # iptables has no transaction: the new chain is filled before the jump to it is swapped.
    new = CHAIN + "-new"
    _ipt(["-t", "filter", "-F", new], ctx, check=False)
    _ipt(["-t", "filter", "-N", new], ctx, check=False)
    for rule in _ipt_rules(ws, gid):
        _ipt(["-t", "filter", "-A", new] + rule, ctx)
    _ipt(["-t", "filter", "-I", "OUTPUT", "1", "-d", ws + "/32", "-j", new], ctx)
    _, output = _ipt(["-t", "filter", "-S", "OUTPUT"], ctx)
    for line in output.splitlines():
        if line.endswith("-j " + CHAIN):
            _ipt(["-t", "filter", "-D"] + line.split()[1:], ctx, check=False)
    _ipt(["-t", "filter", "-F", CHAIN], ctx, check=False)
    _ipt(["-t", "filter", "-X", CHAIN], ctx, check=False)
    _ipt(["-t", "filter", "-E", new, CHAIN], ctx)   # the jump follows the rename


def _ours(ctx: Context, tool: str, ws: str, gid: int, changed: List[str]) -> None:
    listing = _nft_listing if tool == "nft" else _ipt_listing
    before = listing(ctx)
    key = (tool, ws, gid)
    if before is not None and before == STATE.installed.get(key):
        return
    (_nft_install if tool == "nft" else _ipt_install)(ctx, ws, gid)
    after = listing(ctx)
    if after is None:
        raise fail("our %s rules are not there after installing them" % tool)
    STATE.installed = {key: after}
    if before != after:
        changed.append("installed %s %s (was %s)" % (
            tool, "table %s %s" % TABLE if tool == "nft" else "chain " + CHAIN,
            "missing" if before is None else "different"))


# ---- what a former waagent left -------------------------------------------------------------

def _root(conf) -> str:
    return conf["OS.SysRoot"] or "/"


def _waagent_nft(ctx: Context, changed: List[str]) -> None:
    if not which("nft"):
        return
    code, tables = _nft(["list", "tables"], ctx, check=False)
    if code != 0:
        return
    if "table %s %s" % WAAGENT_TABLE in tables.splitlines():
        _nft(["delete", "table"] + list(WAAGENT_TABLE), ctx)
        changed.append("removed waagent's nft table %s %s" % WAAGENT_TABLE)


def _waagent_iptables(ctx: Context, ws: str, changed: List[str]) -> None:
    """Every rule to the WireServer in the security table's OUTPUT chain is waagent's (we never
    write that table)."""
    if which("iptables"):
        code, out = _ipt(["-t", "security", "-S", "OUTPUT"], ctx, check=False)
        if code != 0:
            return
        for line in out.splitlines():
            words = line.split()
            if words[:2] == ["-A", "OUTPUT"] and ws + "/32" in words:
                _ipt(["-t", "security", "-D"] + words[1:], ctx, check=False)
                changed.append("removed waagent's iptables rule: security %s" % line[:200])
        return
    if not which("nft"):
        return
    # iptables-nft's rules without the iptables command: by handle, through nft.
    code, out = _nft(["-a", "list", "chain", "ip", "security", "OUTPUT"], ctx, check=False)
    if code != 0:
        return
    for line in out.splitlines():
        m = re.search(r"# handle (\d+)$", line)
        if m and ("ip daddr %s " % ws) in line:
            _nft(["delete", "rule", "ip", "security", "OUTPUT", "handle", m.group(1)], ctx,
                 check=False)
            changed.append("removed waagent's rule: ip security OUTPUT %s"
                           % line.strip()[:200])


def _waagent_network_setup(ctx: Context, changed: List[str]) -> None:
    root = _root(ctx.conf)
    paths = []
    for d in UNIT_DIRS:
        paths.append(os.path.join(root, d, NETWORK_SETUP_UNIT))
        for wants in ("network.target.wants", "multi-user.target.wants"):
            paths.append(os.path.join(root, d, wants, NETWORK_SETUP_UNIT))
    lib = ctx.conf["Lib.Dir"]
    if lib:
        paths.append(os.path.join(lib, NETWORK_SETUP_SCRIPT))   # the broker's Lib.Dir
    for path in paths:
        if os.path.lexists(path):
            os.unlink(path)
            changed.append("removed %s" % path)


PASSTHROUGH = re.compile(r"[ \t]*<passthrough\b[^>]*>([^<]*)</passthrough>[ \t]*\n?")


def _firewalld(ctx: Context, ws: str, changed: List[str]) -> None:
    path = os.path.join(_root(ctx.conf), FIREWALLD_DIRECT)
    data = read_capped(path, 1024 * 1024)
    if not data:
        return
    text = data.decode("utf-8", "replace")
    gone = [m.group(1).strip() for m in PASSTHROUGH.finditer(text)
            if re.search(r"-d\s+%s(/32)?\s" % re.escape(ws), m.group(1) + " ")]
    if not gone:
        return
    kept = PASSTHROUGH.sub(lambda m: "" if m.group(1).strip() in gone else m.group(0), text)
    atomic_write(path, kept.encode(), 0o644)
    for rule in gone:
        changed.append("removed firewalld passthrough %s" % rule[:200])


# ---- the verb -------------------------------------------------------------------------------

def apply(ctx: Context, args: dict) -> dict:
    if not STATE.lock.acquire(timeout=TOOL_TIMEOUT * 4):
        raise fail("another firewall round is still running")
    try:
        now = time.monotonic()
        if STATE.last is not None and now - STATE.last_at < MIN_INTERVAL:
            return dict(STATE.last, changed=[], cached=True)
        ws = address(ctx.conf)
        gid = wire_gid()
        tool = backend()
        changed: List[str] = []
        _waagent_network_setup(ctx, changed)
        _firewalld(ctx, ws, changed)
        _waagent_nft(ctx, changed)
        _waagent_iptables(ctx, ws, changed)
        _ours(ctx, tool, ws, gid, changed)
        for what in changed:
            log.warning("event=firewall_changed address=%s what=%r", ws, what)
        result = {"address": ws, "backend": tool, "changed": changed[:32],
                  "rules": rules(ws, gid), "cached": False}
        STATE.last, STATE.last_at = result, time.monotonic()
        return result
    finally:
        STATE.lock.release()


def at_start(conf, cancel: threading.Event) -> None:
    """The supervisor, before its workers: the rules in place from the start of every boot."""
    if not conf["OS.EnableFirewall"]:
        return
    try:
        r = apply(Context("supervisor", conf, cancel), {})
        log.info("event=firewall_at_start address=%s backend=%s changed=%d", r["address"],
                 r["backend"], len(r["changed"]))
    except Exception as e:  # noqa: BLE001 - the workers start anyway; monitoring retries
        log.warning("event=firewall_at_start_failed error=%r", str(getattr(e, "message", e)))


VERBS = (
    Privileged(F.APPLY, apply, frozenset(("monitoring",)), slow=True),
)
