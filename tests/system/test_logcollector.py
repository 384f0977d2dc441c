"""The log collector under systemd (issue 15), on the boot scenario's VM (agent_vm): started by
the supervisor through `systemd-run --scope --slice=guestagent-logcollector.slice` whose
command is spawner.drop, it runs in its slice with the slice's and the scope's limits, as its
own uid with no supplementary group, no capability and NoNewPrivs."""

import json
import time

import pytest

pytestmark = pytest.mark.system

SLICE = "guestagent.slice/guestagent-logcollector.slice"


def test_the_collector_runs_in_its_slice_with_limits_as_itself(agent_vm):
    vm = agent_vm
    r = vm.run("for i in $(seq 1 300); do s=$(systemctl is-active guestagent); "
               "[ \"$s\" = active ] && break; sleep 1; done; echo $s", timeout=400)
    assert r.out.split()[-1] == "active", r
    # Something to collect (a run at the slice's 5 % of an emulated CPU lasts minutes).
    vm.run("mkdir -p /var/log/azure/Bench.Ext && head -c 1M /dev/urandom | base64 "
           "> /var/log/azure/Bench.Ext/bench.log", check=True, timeout=300)
    vm.run("rm -f /root/cl.out /root/cl.rc; (agentctl collect-logs > /root/cl.out 2>&1; "
           "echo $? > /root/cl.rc) </dev/null >/dev/null 2>&1 &", check=True)
    seen = None
    deadline = time.monotonic() + 600
    while seen is None and time.monotonic() < deadline:
        st = json.loads(vm.run("agentctl status --json", timeout=60).out or "{}")
        pid = next((w["pid"] for w in st.get("workers", ()) if w["name"] == "logcollector"),
                   None)
        if pid:
            r = vm.run("cat /proc/%d/cgroup /proc/%d/status; cat /proc/%d/cmdline | tr '\\0' ' '"
                       % (pid, pid, pid))
            # The worker itself (its process title), not spawner.drop, still root on its
            # way there.
            if r.rc == 0 and "guestagent: logcollector [unpriv]" in r.out:
                seen = (pid, r.out)
                break
        time.sleep(0.5)
    assert seen, "the collector's process was never seen"
    pid, out = seen
    cgroup = next(line for line in out.splitlines() if line.startswith("0::"))[3:]
    assert cgroup.startswith("/" + SLICE + "/guestagent-logcollector-"), out
    assert cgroup.endswith(".scope"), out
    status = dict(line.split(":", 1) for line in out.splitlines() if ":" in line
                  and not line.startswith("0::"))
    uid = vm.run("id -u guestagent-logs", check=True).out.strip()
    assert status["Uid"].split() == [uid] * 4, status["Uid"]
    assert status["Groups"].strip() == "", status["Groups"]
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    # The limits in effect: the slice's CPU quota and memory, the scope's own memory limit.
    limits = vm.run("cat /sys/fs/cgroup/%s/cpu.max /sys/fs/cgroup/%s/memory.max "
                    "/sys/fs/cgroup%s/memory.max" % (SLICE, SLICE, cgroup), check=True).out
    assert limits.split() == ["5000", "100000", str(256 << 20), str(256 << 20)], limits
    r = vm.run("for i in $(seq 1 1200); do [ -s /root/cl.rc ] && break; sleep 1; done; "
               "cat /root/cl.rc /root/cl.out", timeout=1300)
    diag = vm.run("tail -n 40 /var/log/guestagent/logcollector.log; journalctl -u guestagent "
                  "--no-pager -n 40 | grep -i -e logcollector -e oom -e slice; "
                  "journalctl -k --no-pager | grep -i -e oom -e killed | tail -5").out
    assert r.out.split()[0] == "0", (r, diag)
    assert "bundle: /var/lib/guestagent/logcollector/logs.zip (" in r.out, r
    mode = vm.run("stat -c '%a %U' /var/lib/guestagent/logcollector/logs.zip", check=True).out
    assert mode.split() == ["600", "guestagent-logs"], mode
