"""A network namespace standing in for the WireServer's network (issue 14's firewall tests).

The test creates the namespace; a veth link in it holds WIRE, the address standing in for the
WireServer, with an HTTP server on port 80 and a DNS stand-in on 53 (tcp: accepts; udp: echoes)
— all inside the namespace, run as root. The supervisor under test is started inside it too
(`ip netns exec`), so every rule it installs is the namespace's, never the host's.
`connect()` opens a connection from inside as a given uid/gid (setpriv)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.integration import supervisor_harness as harness

WIRE = "10.214.0.16"

SERVER = r"""
import http.server, socket, socketserver, sys, threading
addr = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"wireserver stand-in\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
web = S((addr, 80), H)
dns_tcp = socket.socket(); dns_tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
dns_tcp.bind((addr, 53)); dns_tcp.listen(16)
dns_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); dns_udp.bind((addr, 53))
def tcp():
    while True:
        c, _ = dns_tcp.accept(); c.sendall(b"dns\n"); c.close()
def udp():
    while True:
        data, peer = dns_udp.recvfrom(512); dns_udp.sendto(data, peer)
threading.Thread(target=tcp, daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
print("serving", flush=True)
web.serve_forever()
"""

CLIENT = r"""
import socket, sys
addr, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
        s.sendto(b"query", (addr, port)); ok = s.recvfrom(512)[0] == b"query"
    else:
        s = socket.create_connection((addr, port), timeout=1.5)
        if port == 80:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        ok = bool(s.recv(256))
    print("connected" if ok else "nothing")
except OSError as e:
    print("blocked: %s" % e)
"""


def ns_run(ns, *argv, check=True):
    r = subprocess.run(["ip", "netns", "exec", ns] + list(argv), capture_output=True,
                       text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("%s exited %d: %s%s" % (" ".join(argv)[:300], r.returncode,
                                                    r.stderr[-2000:], r.stdout[-500:]))
    return r


@pytest.fixture
def wirenet():
    for tool in ("ip", "nft", "setpriv"):
        if shutil.which(tool) is None:
            pytest.fail("%s is not installed (make deps installs nftables and util-linux)"
                        % tool)
    ns = "gafw%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=20)
    server = None
    try:
        ns_run(ns, "ip", "link", "set", "lo", "up")
        ns_run(ns, "ip", "link", "add", "wire0", "type", "veth", "peer", "name", "wire1")
        ns_run(ns, "ip", "link", "set", "wire1", "up")
        ns_run(ns, "ip", "addr", "add", WIRE + "/24", "dev", "wire0")
        ns_run(ns, "ip", "link", "set", "wire0", "up")
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER,
                                   WIRE], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        assert server.stdout.readline().strip() == "serving"
        yield ns
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], timeout=20)


def connect(ns, uid, gid, port=80, proto="tcp"):
    """'connected' or 'blocked: why', from a process inside ns running as uid:gid (no
    supplementary groups)."""
    r = ns_run(ns, "setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups",
               sys.executable, "-c", CLIENT, WIRE, str(port), proto)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def start_in(ns, agent):
    """The agent's supervisor inside the namespace (its rules are the namespace's)."""
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "GUESTAGENT_TEST_DIR": agent.test_dir}
    agent._stderr = open(agent.stderr_path, "ab")
    agent.proc = subprocess.Popen(["ip", "netns", "exec", ns, harness.GUESTAGENTD, "--config",
                                   agent.conf], stdin=subprocess.DEVNULL, stdout=agent._stderr,
                                  stderr=agent._stderr, env=environ)
    agent.wait_all_running()
    return agent


def firewall_conf(period=2):
    return {"OS.EnableFirewall": "y", "OS.EnableFirewallPeriod": str(period),
            "Protocol.Endpoint": "%s:80" % WIRE}


def our_table(ns):
    r = ns_run(ns, "nft", "list", "table", "inet", "guestagent", check=False)
    return r.stdout if r.returncode == 0 else None


def wait_for(predicate, timeout, what):
    return harness.wait_for(predicate, timeout, 0.1, what)


def now():
    return time.monotonic()
