"""The per-boot network verbs (supervisor/privileged/boot.py) on a real network: two network
namespaces this test creates, joined by a veth pair, a DHCP server (dnsmasq) in one and the
broker's handlers run in the other (a process of the venv's Python inside it, with its own
UTS namespace for the new hostname). Nothing touches the host's network."""

import json
import os
import shutil
import subprocess
import time

import pytest

from emulator.confinement import PYTHON

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

SERVER, CLIENT = "10.213.0.1", "10.213.0.20"
NEW_NAME = "web-new-01"


def ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=check,
                          timeout=20)


@pytest.fixture
def net(tmp_path):
    for tool in ("ip", "dnsmasq", "unshare"):
        if shutil.which(tool) is None:
            pytest.fail("%s is not installed (make deps installs dnsmasq-base)" % tool)
    tag = "gab%d" % os.getpid()
    srv, cli = tag + "s", tag + "c"
    ip("netns", "add", srv)
    ip("netns", "add", cli)
    procs = []
    try:
        ip("link", "add", "vsrv", "netns", srv, "type", "veth", "peer", "name", "vcli",
           "netns", cli)
        ip("-n", srv, "addr", "add", SERVER + "/24", "dev", "vsrv")
        ip("-n", cli, "addr", "add", CLIENT + "/24", "dev", "vcli")
        for ns, dev in ((srv, "vsrv"), (cli, "vcli")):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", cli, "route", "add", "default", "via", SERVER)
        mac = json.loads(ip("-n", cli, "-j", "link", "show", "vcli").stdout)[0]["address"]
        leases = tmp_path / "leases"
        log = open(tmp_path / "dnsmasq.log", "w")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", srv, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
             "--port=0", "--interface=vsrv", "--bind-interfaces", "--user=root",
             "--dhcp-range=10.213.0.10,10.213.0.50,255.255.255.0,1h",
             "--dhcp-host=%s,%s" % (mac, CLIENT), "--dhcp-authoritative", "--log-dhcp",
             "--log-facility=-", "--dhcp-leasefile=%s" % leases,
             "--pid-file=%s" % (tmp_path / "dnsmasq.pid")],
            stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while "started" not in (tmp_path / "dnsmasq.log").read_text():
            assert proc.poll() is None, (tmp_path / "dnsmasq.log").read_text()
            assert time.monotonic() < deadline, "dnsmasq did not start"
            time.sleep(0.05)
        yield {"cli": cli, "mac": mac, "leases": leases, "log": tmp_path / "dnsmasq.log",
               "lib": str(tmp_path / "lib")}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        ip("netns", "del", cli, check=False)
        ip("netns", "del", srv, check=False)


def in_client(net, handler, conf=None, hostname=None):
    """Run one broker handler inside the client namespace (a real process, root)."""
    conf = dict(conf or {}, Lib__Dir=net["lib"])    # never the host's /var/lib/waagent
    code = (
        "import json, socket, threading\n"
        "from config import defaults\n"
        "from supervisor import broker\n"
        "from supervisor.privileged import boot\n"
        "from ipc.errors import IpcError\n"
        "if %r: socket.sethostname(%r)\n"
        "conf = defaults().with_overrides(**%r)\n"
        "ctx = broker.Context('provisioning', conf, threading.Event())\n"
        "try:\n"
        "    print(json.dumps(boot.%s(ctx, {})))\n"
        "except IpcError as e:\n"
        "    print(json.dumps({'error': e.message}))\n"
    ) % (bool(hostname), hostname or "", conf, handler)
    r = subprocess.run(["ip", "netns", "exec", net["cli"], "unshare", "--uts", PYTHON, "-c",
                        code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def carrier_changes(net):
    r = subprocess.run(["ip", "netns", "exec", net["cli"], "cat",
                        "/sys/class/net/vcli/carrier_changes"], capture_output=True, text=True)
    return r.stdout.strip()


def test_the_new_hostname_reaches_the_dhcp_server_as_option_12_without_a_bounce(net):
    before = carrier_changes(net)
    r = in_client(net, "publish_hostname", hostname=NEW_NAME)
    assert r == {"hostname": NEW_NAME, "interface": "vcli", "acked": True, "published": True}, r
    log = net["log"].read_text()
    # dnsmasq saw the name in the request (option 12) and acknowledged the lease with it.
    assert "client provides name: %s" % NEW_NAME in log, log
    assert "DHCPACK(vsrv) %s %s %s" % (CLIENT, net["mac"], NEW_NAME) in log, log
    assert NEW_NAME in net["leases"].read_text()
    # The interface stayed up with its address: no ifdown/ifup.
    assert carrier_changes(net) == before
    addrs = ip("-n", net["cli"], "-j", "addr", "show", "vcli").stdout
    assert CLIENT in addrs


def test_the_wireserver_route_is_added_via_the_default_gateway_once(net):
    conf = {"Protocol__Endpoint": "168.63.129.16"}
    assert in_client(net, "wireserver_route", conf) == {
        "added": True, "reason": "via %s dev vcli" % SERVER}
    route = ip("-n", net["cli"], "route", "show", "168.63.129.16").stdout
    assert route.split()[:5] == ["168.63.129.16", "via", SERVER, "dev", "vcli"], route
    assert in_client(net, "wireserver_route", conf) == {"added": False,
                                                        "reason": "present via vcli"}


def test_no_wireserver_route_on_a_machine_that_is_not_azure(net):
    """No Azure chassis tag, no Protocol.Endpoint: the broker leaves the network alone."""
    r = in_client(net, "wireserver_route")
    assert "not an Azure VM" in r["error"]
    assert ip("-n", net["cli"], "route", "show", "168.63.129.16").stdout == ""


MONITOR = r"""
import json, socket, threading
from config import defaults
from supervisor import broker
from supervisor.privileged import boot
conf = defaults().with_overrides(Lib__Dir=%r)
out = []
for name in (None, None, %r, %r):
    if name:
        socket.sethostname(name)
    out.append(boot.publish_hostname(broker.Context("monitoring", conf, threading.Event()), {}))
print(json.dumps(out))
"""


def test_the_monitor_publishes_a_changed_hostname_once_from_the_brokers_own_record(net):
    """The monitoring worker's call in a UTS namespace: the first takes the name as published,
    an unchanged name is not sent again, a changed one is (once), as a DHCP request."""
    before = carrier_changes(net)
    r = subprocess.run(["ip", "netns", "exec", net["cli"], "unshare", "--uts", PYTHON, "-c",
                        MONITOR % (net["lib"], NEW_NAME, NEW_NAME)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first, unchanged, changed, again = json.loads(r.stdout.strip().splitlines()[-1])
    assert first["published"] is False and unchanged["published"] is False, (first, unchanged)
    assert unchanged["hostname"] == first["hostname"] != NEW_NAME
    assert changed == {"hostname": NEW_NAME, "interface": "vcli", "acked": True,
                       "published": True}, changed
    assert again == {"hostname": NEW_NAME, "interface": None, "acked": False,
                     "published": False}, again
    log = net["log"].read_text()
    assert log.count("client provides name: %s" % NEW_NAME) >= 1, log
    assert log.count("DHCPREQUEST") == log.count("client provides name: %s" % NEW_NAME), log
    with open(os.path.join(net["lib"], "published_hostname")) as f:
        assert f.read() == NEW_NAME
    assert carrier_changes(net) == before
