"""VM extensions under systemd (issue 13): the default scenario's extension, added in the
emulator, is installed and enabled by the agent in the boot scenario's VM, runs as a
transient scope in guestagent-extensions.slice, and its status reaches the status blob."""

import time

import pytest

pytestmark = pytest.mark.system

NAME = "Contoso.Demo.HelloWorld"
TIMEOUT = 600   # from the VM's boot: provisioning first, then Python under TCG


def _entry(platform):
    doc = (platform.state().get("latest_status") or {}).get("document") or {}
    for h in doc.get("aggregateStatus", {}).get("handlerAggregateStatus", []):
        if h.get("handlerName") == NAME:
            return h
    return None


def test_an_extension_runs_in_the_extensions_slice_and_its_status_reaches_the_blob(
        agent_vm, platform):
    deadline = time.monotonic() + TIMEOUT
    entry = None
    while time.monotonic() < deadline:
        entry = _entry(platform)
        st = ((entry or {}).get("runtimeSettingsStatus") or {}).get("settingsStatus", {})
        if entry and entry["status"] == "Ready" and st.get("status", {}).get("status") == "success":
            break
        time.sleep(5)
    else:
        journal = agent_vm.run("journalctl -u guestagent --no-pager | tail -n 80").out
        raise AssertionError("no success for %s: %r\n%s" % (NAME, entry, journal))
    cgroup = agent_vm.run("cat /var/log/azure/%s/hello.cgroup" % NAME, check=True).out
    assert "/guestagent.slice/guestagent-extensions.slice/guestagent-ext-" in cgroup or \
        "/guestagent-extensions.slice/guestagent-ext-" in cgroup, cgroup
    # The manifest's resourceLimits.cpuQuotaPercentage=50: the scope's CPUQuota=50%.
    cpu_max = agent_vm.run("cat /var/log/azure/%s/hello.cpu_max" % NAME, check=True).out
    assert cpu_max.split() == ["50000", "100000"], cpu_max
    ls = agent_vm.run("stat -c '%%U %%a' /var/lib/waagent /var/lib/waagent/%s-1.0.0" % NAME,
                      check=True).out.split("\n")
    assert ls[0] == "root 700", ls
