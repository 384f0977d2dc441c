"""The WireServer firewall in a real VM (issue 14): with OS.EnableFirewall=y the rules hold
after a reboot — the supervisor installs them at start, before its workers — root and the
guestagent-wire group reach the WireServer (the emulator at 10.0.2.100), another user cannot,
and the workers still get their goal state. Shares the session's agent_vm; leaves it as it was
(the keys removed, the table deleted, the service restarted)."""

from guestvm.image import WIRE_ADDRESS

KEYS = "OS.EnableFirewall=y\nOS.EnableFirewallPeriod=5\n"
MARK = "# --- tests/system/test_firewall.py ---"

CONNECT = ("python3 -c 'import socket,sys\n"
           "try:\n"
           "    s = socket.create_connection((\"%s\", 80), timeout=3)\n"
           "    s.sendall(b\"GET / HTTP/1.0\\r\\n\\r\\n\")\n"
           "    print(\"connected\" if s.recv(64) else \"nothing\")\n"
           "except OSError as e:\n"
           "    print(\"blocked\")'" % WIRE_ADDRESS)


def as_user(spec):
    return "setpriv %s --clear-groups %s" % (spec, CONNECT)


def wait_table(vm, timeout=120):
    r = vm.run("for i in $(seq 1 %d); do nft list table inet guestagent 2>/dev/null && exit 0; "
               "sleep 1; done; exit 1" % timeout, timeout=timeout + 30)
    assert r.rc == 0, vm.run("journalctl -u guestagent --no-pager -n 80").out
    return r.out


def test_the_firewall_holds_after_a_reboot(agent_vm, timings):
    vm = agent_vm
    wire_gid = vm.run("getent group guestagent-wire | cut -d: -f3", check=True).out.strip()
    vm.run("printf '%s\\n%s' >> /etc/waagent.conf" % (MARK, KEYS), check=True)
    try:
        vm.run("systemctl restart guestagent", check=True, timeout=240)
        assert "meta skgid %s accept" % wire_gid in wait_table(vm)
        timings["agent-vm: reboot to ssh (firewall)"] = vm.reboot()
        table = wait_table(vm)
        assert "ip daddr %s ct state invalid,new drop" % WIRE_ADDRESS in table, table
        # Installed at start by the supervisor, before its workers, in this boot.
        log = vm.run("journalctl -b -u guestagent --no-pager -o cat", check=True).out
        assert "event=firewall_at_start address=%s backend=nft" % WIRE_ADDRESS in log, log[-3000:]
        assert vm.run(CONNECT).out.strip() == "connected"
        assert vm.run(as_user("--reuid=nobody --regid=%s" % wire_gid)).out.strip() == \
            "connected"
        assert vm.run(as_user("--reuid=nobody --regid=nogroup")).out.strip() == "blocked"
    finally:
        vm.run("sed -i '/^%s$/,$d' /etc/waagent.conf" % MARK.replace("/", "\\/"), check=True)
        vm.run("nft delete table inet guestagent 2>/dev/null; systemctl restart guestagent",
               timeout=240)
    assert vm.run(as_user("--reuid=nobody --regid=nogroup")).out.strip() == "connected"
