"""Provisioning's loose ends (issue 12): the host key's thumbprint reported to the platform,
Provisioning.Agent=disabled and unknown values, the Ready debt, a legacy empty marker. The real
agent in a confined host against the emulator, as tests/integration/provisioning/ does."""

import os
import subprocess

from tests.integration.provisioning.test_provisioning import (DONE, _status, provision, states,
                                                              swap_guid)

VM_ID = swap_guid("4C4C4544-0050-4810-8051-B2C04F4D3132").lower()


def role_properties(emu):
    return [r for k, v in emu.state()["received"].items() if k == "role_properties" for r in v]


def test_the_host_key_thumbprint_reaches_the_platform_as_ssh_keygen_reads_it(emu, make_host):
    host = make_host({"Provisioning.RegenerateSshHostKeyPair": "y",
                      "Provisioning.SshHostKeyPairType": "ed25519"})
    log = provision(host)
    assert "outcome='provisioned'" in log
    pub = host.path("etc", "ssh", "ssh_host_ed25519_key.pub")
    out = subprocess.run(["ssh-keygen", "-lf", pub], capture_output=True, text=True, check=True)
    expected = out.stdout.split()[1].replace(":", "")
    received = role_properties(emu)
    assert len(received) == 1 and not received[0]["errors"], received
    doc = received[0]["document"]
    assert [i["properties"] for i in doc["instances"]] == [{"CertificateThumbprint": expected}]
    # After Ready, which is what the platform waits for.
    assert states(emu) == [("NotReady", "Provisioning"), ("Ready", None)]
    assert received[0]["seq"] > emu.health()[-1]["seq"]


def test_a_thumbprint_the_platform_refuses_does_not_fail_provisioning(emu, make_host):
    emu.faults({"roleProperties": [{"kind": "status", "code": 400, "repeat": 10}]})
    host = make_host({"Provisioning.RegenerateSshHostKeyPair": "y",
                      "Provisioning.SshHostKeyPairType": "ed25519"})
    log = provision(host)
    assert "outcome='provisioned'" in log and "event=thumbprint_not_published" in log
    assert states(emu)[-1] == ("Ready", None)


def test_disabled_a_ready_that_fails_is_owed_not_a_violation(emu, make_host):
    """§3.1: Ready on every start. All three attempts of the Ready fail: no second finish
    (the broker would end the worker for it), the Ready is owed, and the next start of the
    worker in this boot (agentctl start) reports it."""
    emu.faults({"health": [{"kind": "status", "code": 500, "repeat": 3}]})
    host = make_host({"Provisioning.Agent": "disabled"})
    log = provision(host)
    assert "Ready stays owed to the platform" in log and "outcome='disabled; Ready owed" in log
    assert states(emu) == []
    sup = host.log("supervisor")
    assert "event=security" not in sup and "verb=provisioning.finish" not in sup, sup
    assert open(host.lib("provisioned")).read().strip() == VM_ID
    workers, _ = _status(host)
    assert workers["provisioning"]["last_exit"] == "exit 0", workers["provisioning"]
    from emulator.confinement import VENV
    r = host.run_inside([os.path.join(VENV, "bin", "agentctl"), "--config", host.conf_path,
                         "start", "provisioning"])
    assert r.returncode == 0, r.stderr
    log = host.wait_log(DONE, 30, count=2)
    assert "outcome='already provisioned; the owed Ready reported'" in log, log
    assert states(emu) == [("Ready", None)]
    assert "event=security" not in host.log("supervisor")


def test_an_unknown_provisioning_agent_does_not_provision(emu, make_host):
    """protocol.md §3.1: a value waagent does not know means disabled, not auto: the media
    is not read, no user is made; the marker is written and Ready reported."""
    host = make_host({"Provisioning.Agent": "off"})
    log = provision(host)
    assert "outcome='disabled; Ready reported'" in log, log
    sup = host.log("supervisor")
    assert "reason=agent_disabled" in sup and "verb=provisioning.read_ovf" not in sup
    assert not os.path.exists(host.path("home", "azureuser"))
    assert open(host.lib("provisioned")).read().strip() == VM_ID
    assert states(emu) == [("Ready", None)]


def test_a_legacy_empty_marker_is_not_provisioned_again(emu, make_host):
    """An older waagent left an empty `provisioned`: rewritten with the VM id and Ready
    reported (§3.4 step 1), nothing provisioned although the media is there."""
    host = make_host()
    os.makedirs(host.lib(), 0o700, exist_ok=True)
    open(host.lib("provisioned"), "w").close()
    log = provision(host)
    assert "outcome='provisioned by an older agent; Ready reported'" in log, log
    assert "verb=provisioning.read_ovf" not in host.log("supervisor")
    assert not os.path.exists(host.path("home", "azureuser"))
    assert open(host.lib("provisioned")).read().strip() == VM_ID
    assert states(emu) == [("Ready", None)]
    # The next boot: the marker names this VM, nothing reported.
    provision(host)
    assert states(emu) == [("Ready", None)]
