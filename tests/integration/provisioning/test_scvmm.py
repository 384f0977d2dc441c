"""SCVMM (protocol.md §3.3, DetectScvmmEnv): with its media in the drive, the provisioning
worker has the broker run SCVMM's installer and provisions nothing itself."""

import os

from tests.integration.provisioning.test_provisioning import provision, states


def test_scvmm_media_runs_its_installer_and_guestagent_stands_aside(emu, make_host):
    host = make_host({"DetectScvmmEnv": "y"})
    ran = host.path("scvmm-ran")
    with open(os.path.join(host.media, "linuxosconfiguration.xml"), "w") as f:
        f.write("<LinuxOSConfiguration/>\n")
    with open(os.path.join(host.media, "install"), "w") as f:
        f.write('#!/bin/bash\necho "$(id -u) $1 $(ls "$2")" >> %s\n' % ran)
    log = provision(host)
    assert "outcome='SCVMM provisions this VM'" in log, log
    # Root ran it with -p <the mounted media>, whose files it could read.
    line = open(ran).read()
    assert line.startswith("0 -p ") and "linuxosconfiguration.xml" in line, line
    assert not os.path.exists(host.path("home", "azureuser"))
    assert states(emu) == []
    assert "event=security" not in host.log("supervisor")


def test_without_detect_scvmm_env_its_media_is_ignored(emu, make_host):
    host = make_host()
    with open(os.path.join(host.media, "linuxosconfiguration.xml"), "w") as f:
        f.write("<LinuxOSConfiguration/>\n")
    with open(os.path.join(host.media, "install"), "w") as f:
        f.write("#!/bin/bash\ntouch %s\n" % host.path("scvmm-ran"))
    log = provision(host)
    assert "outcome='provisioned'" in log
    assert not os.path.exists(host.path("scvmm-ran"))
