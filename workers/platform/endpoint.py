"""Finding the WireServer (protocol.md §1.1).

Candidates, in order: `Protocol.Endpoint` (tests, the VM harness; nothing else is tried then);
with `Protocol.EndpointDiscovery=dhcp`, a route to 168.63.129.16 in /proc/net/route, then
DHCP option 245 from the dhclient and systemd-networkd lease files; the endpoint saved by the
last successful detection (in the worker's own state folder: no other worker can plant one);
168.63.129.16 last. /proc and the lease folders are read under `OS.SysRoot`, so fixture trees
drive discovery in tests. The raw DHCPDISCOVER of waagent needs
root and port 68, which no worker has: it is not done (the leases cover every supported distro).

Detection probes each candidate with `GET /?comp=versions` up to `Protocol.DetectionAttempts`
times, `Protocol.DetectionInterval` apart, then raises ProtocolNotFoundError.
"""

import datetime
import glob
import ipaddress
import logging
import os
import re
from typing import List, NamedTuple, Optional

from workers.platform.errors import PlatformError

log = logging.getLogger(__name__)

KNOWN_WIRESERVER_IP = "168.63.129.16"
# 168.63.129.16 as /proc/net/route writes it (little-endian hex).
KNOWN_WIRESERVER_ROUTE = "10813FA8"
SAVED_ENDPOINT_FILE = "WireServerEndpoint"
MAX_LEASE_BYTES = 256 * 1024
MAX_ROUTE_BYTES = 1024 * 1024

DHCLIENT_LEASE_GLOBS = (
    "var/lib/dhcp/dhclient.*.leases",          # Debian, Ubuntu
    "var/lib/dhclient/dhclient-*.leases",      # RHEL 6
    "var/lib/dhclient/dhclient-*.lease",       # RHEL 7+
    "var/lib/NetworkManager/dhclient-*.lease",
)
NETWORKD_LEASE_GLOB = "run/systemd/netif/leases/*"


class Endpoint(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    host: str
    port: int = 80

    @classmethod
    def parse(cls, value: str) -> "Endpoint":
        """`host`, `host:port`, `[v6]` or `[v6]:port`."""
        value = value.strip()
        if value.startswith("["):
            host, _, rest = value[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif value.count(":") == 1:
            host, port = value.split(":")
        else:
            host, port = value, ""
        if not host:
            raise ValueError("no host in %r" % value)
        try:
            number = int(port) if port else 80
        except ValueError:
            raise ValueError("bad port in %r" % value) from None
        if not 0 < number < 65536:
            raise ValueError("bad port in %r" % value)
        return cls(host, number)

    @property
    def netloc(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (host, self.port)

    @property
    def base_url(self) -> str:
        return "http://%s" % self.netloc

    def __str__(self):
        return self.netloc


def decode_option_245(value: str) -> Optional[str]:
    """`a8:3f:81:10` (dhclient) or `a83f8110` (networkd) -> `168.63.129.16`; None if not."""
    value = value.strip().rstrip(";").strip()
    if ":" in value:
        parts = value.split(":")
        if len(parts) != 4 or not all(re.fullmatch(r"[0-9A-Fa-f]{1,2}", p) for p in parts):
            return None
        octets = [int(p, 16) for p in parts]
    else:
        if not re.fullmatch(r"[0-9A-Fa-f]{8}", value):
            return None
        octets = [int(value[i:i + 2], 16) for i in range(0, 8, 2)]
    return ".".join(str(o) for o in octets)


_EXPIRE = re.compile(r"^\s*expire\s+(?:\d+\s+)?(never|\d{4}/\d{1,2}/\d{1,2}\s+\d{1,2}:\d{2}:\d{2})"
                     r"\s*;")
_OPTION_245 = re.compile(r"^\s*option\s+unknown-245\s+([^;]+);")


def parse_dhclient_leases(text: str, now: Optional[datetime.datetime] = None) -> Optional[str]:
    """Option 245 of the last lease that has not expired (`expire never` or a future date)."""
    now = now or datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    found = None
    in_lease = False
    endpoint, expired = None, False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("lease") and stripped.endswith("{"):
            in_lease, endpoint, expired = True, None, False
            continue
        if not in_lease:
            continue
        if stripped == "}":
            if endpoint and not expired:
                found = endpoint
            in_lease = False
            continue
        match = _OPTION_245.match(line)
        if match:
            endpoint = decode_option_245(match.group(1))
            continue
        match = _EXPIRE.match(line)
        if match and match.group(1) != "never":
            try:
                when = datetime.datetime.strptime(" ".join(match.group(1).split()),
                                                  "%Y/%m/%d %H:%M:%S")
            except ValueError:
                expired = True
                continue
            expired = when <= now
    return found


def parse_networkd_lease(text: str) -> Optional[str]:
    """`OPTION_245=a83f8110` of a systemd-networkd lease file."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "OPTION_245":
            return decode_option_245(value)
    return None


def route_has_wireserver(route_text: str) -> bool:
    """A /proc/net/route line with 168.63.129.16 as destination or gateway."""
    for line in route_text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and KNOWN_WIRESERVER_ROUTE in (fields[1].upper(), fields[2].upper()):
            return True
    return False


def _read(path: str, cap: int) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError:
        return None
    if len(data) > cap:
        log.warning("%s is larger than %d bytes; ignored", path, cap)
        return None
    return data.decode("utf-8", errors="replace")


def _under(root: str, relative: str) -> str:
    return os.path.join(root or "/", relative.lstrip("/"))


def _valid_ipv4(value: Optional[str]) -> Optional[str]:
    if not value:
        return None
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        return None


def endpoint_from_leases(sysroot: str) -> Optional[str]:
    """Option 245 from the lease files under `sysroot`: networkd first, then dhclient (newest
    file last so it wins)."""
    for path in sorted(glob.glob(_under(sysroot, NETWORKD_LEASE_GLOB))):
        text = _read(path, MAX_LEASE_BYTES)
        found = _valid_ipv4(parse_networkd_lease(text)) if text else None
        if found:
            return found
    paths: List[str] = []
    for pattern in DHCLIENT_LEASE_GLOBS:
        paths.extend(glob.glob(_under(sysroot, pattern)))

    def mtime(p):
        try:
            return os.stat(p).st_mtime
        except OSError:
            return 0

    found = None
    for path in sorted(paths, key=mtime):
        text = _read(path, MAX_LEASE_BYTES)
        endpoint = _valid_ipv4(parse_dhclient_leases(text)) if text else None
        if endpoint:
            found = endpoint
    return found


def saved_endpoint(state_dir: str) -> Optional[str]:
    """The endpoint remembered in this worker's own folder (no other worker can write it)."""
    text = _read(os.path.join(state_dir, SAVED_ENDPOINT_FILE), 256)
    if not text:
        return None
    try:
        return str(Endpoint.parse(text.strip()))
    except ValueError:
        return None


def save_endpoint(state_dir: str, endpoint: Endpoint) -> None:
    """Remember the endpoint for this worker's next start, in its own folder (best effort)."""
    from statefiles import write_atomic
    try:
        write_atomic(os.path.join(state_dir, SAVED_ENDPOINT_FILE), str(endpoint).encode(),
                     0o600)
    except OSError:
        pass


def candidates(config, skip_dhcp: bool = False,
               state_dir: Optional[str] = None) -> List[Endpoint]:
    """The endpoints to probe, best first, without duplicates; `state_dir` is the worker's
    own folder, where the last detected one is remembered."""
    configured = config["Protocol.Endpoint"]
    if configured:
        try:
            return [Endpoint.parse(configured)]
        except ValueError as e:
            raise PlatformError("Protocol.Endpoint: %s" % e) from None
    found: List[str] = []
    sysroot = config["OS.SysRoot"] or "/"
    if config["Protocol.EndpointDiscovery"] == "dhcp" and not skip_dhcp:
        route = _read(_under(sysroot, "proc/net/route"), MAX_ROUTE_BYTES)
        if route and route_has_wireserver(route):
            found.append(KNOWN_WIRESERVER_IP)
        lease = endpoint_from_leases(sysroot)
        if lease:
            found.append(lease)
    saved = saved_endpoint(state_dir) if state_dir else None
    if saved:
        found.append(saved)
    found.append(KNOWN_WIRESERVER_IP)
    result: List[Endpoint] = []
    for value in found:
        endpoint = Endpoint.parse(value)
        if endpoint not in result:
            result.append(endpoint)
    return result

