"""The provisioning integration harness: the emulator as a real process on 127.0.0.1 and the
whole agent (real guestagentd, real workers, real useradd/chpasswd/ssh-keygen/hostname/mount)
in a confined host (emulator/confinement.py): private mount and UTS namespaces over copies of
/etc, /home, /var/lib and /var/log, so the machine is left as it was."""

import os
import shutil

import pytest

from emulator.confinement import GUESTAGENTD, ConfinedHost


@pytest.fixture
def make_host(emu):
    if os.geteuid() != 0:
        pytest.skip("the confined host needs root (namespaces, useradd in a copied /etc)")
    if not os.path.exists(GUESTAGENTD):
        pytest.fail("%s is missing: run `make venv` first" % GUESTAGENTD)
    for tool in ("unshare", "nsenter", "useradd", "chpasswd", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    hosts = []

    def make(conf=None, media=True):
        values = dict(emu.conf())
        # One attempt: a failure goes FATAL at once, so each test sees exactly one health
        # report per failure (the retries have their own test).
        values["Agent.FlapMaxFailures"] = "1"
        values.update(conf or {})
        host = ConfinedHost(values)
        hosts.append(host)
        if media:
            host.write_media()
        return host
    yield make
    for host in hosts:
        host.close()
