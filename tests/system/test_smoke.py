"""The harness itself and the install path: the VM boots under systemd, the agent is installed
from its Debian package (`make deb`, `dpkg -i`) as the README tells an image maintainer, and
systemd accepts our units."""

import pytest

pytestmark = pytest.mark.system

UNITS = ["guestagent.service", "guestagent.slice", "guestagent-extensions.slice",
         "guestagent-logcollector.slice"]


def test_guest_runs_systemd_as_pid1(agent_vm):
    assert agent_vm.run("cat /proc/1/comm", check=True).out.strip() == "systemd"
    r = agent_vm.run("systemctl is-system-running --wait", timeout=300)
    failed = agent_vm.run("systemctl list-units --failed --no-legend --plain").out
    assert r.out.strip() in ("running", "degraded"), r
    assert "guestagent" not in failed


def test_installed_from_the_debian_package(agent_vm):
    r = agent_vm.run("dpkg-query -W -f='${db:Status-Status} ${Version}' guestagent", check=True)
    assert r.out.split()[0] == "installed", r
    # The private environment: our packages there and nowhere else, so `supervisor` shadows
    # nothing of the system's python3.
    r = agent_vm.run("/usr/lib/guestagent/bin/python -I -c 'import supervisor, sys; "
                     "print(supervisor.__file__); print(sys.prefix)'", check=True)
    path, prefix = r.out.split()
    assert path.startswith("/usr/lib/guestagent/lib/python3"), r
    assert prefix == "/usr/lib/guestagent"
    assert agent_vm.run("cd / && python3 -I -c 'import supervisor'").rc != 0
    # Debian's libraries, not copies in the package.
    r = agent_vm.run("/usr/lib/guestagent/bin/python -I -c 'import cryptography, psutil, "
                     "requests; print(cryptography.__file__, psutil.__file__, "
                     "requests.__file__)'", check=True)
    assert all(p.startswith("/usr/lib/python3/dist-packages/") for p in r.out.split()), r
    r = agent_vm.run("/usr/lib/guestagent/bin/python -m pip list --local --format=freeze "
                     "--disable-pip-version-check", check=True)
    names = {line.split("==")[0].lower() for line in r.out.split()}
    assert names == {"guestagent"}, r.out
    for exe in ("/usr/lib/guestagent/bin/guestagentd", "/usr/lib/guestagent/bin/agentctl",
                "/usr/sbin/waagent"):
        agent_vm.run(f"test -x {exe}", check=True)
    assert agent_vm.run("readlink /usr/sbin/agentctl").out.strip() == \
        "/usr/lib/guestagent/bin/agentctl"
    r = agent_vm.run("systemctl show -p ExecStart --value guestagent.service", check=True)
    assert "path=/usr/lib/guestagent/bin/guestagentd" in r.out, r
    # /etc/waagent.conf is the package's conffile.
    r = agent_vm.run("dpkg-query -W -f='${Conffiles}' guestagent", check=True)
    assert "/etc/waagent.conf" in r.out, r


def test_config_units_users_and_folders(agent_vm):
    agent_vm.run("test -s /etc/waagent.conf", check=True)
    r = agent_vm.run("systemctl is-enabled guestagent.service")
    assert r.out.strip() == "enabled", r
    for user in ("guestagent-prov", "guestagent-ext", "guestagent-mon", "guestagent-logs"):
        r = agent_vm.run(f"id -gn {user}; getent passwd {user} | cut -d: -f7", check=True)
        assert r.out.split() == ["guestagent-wire", "/usr/sbin/nologin"], r
    agent_vm.run("getent group guestagent-admin", check=True)
    r = agent_vm.run("stat -c '%n %U %G %a' /run/guestagent /var/lib/guestagent "
                     "/var/log/guestagent /var/lib/waagent", check=True)
    got = {line.split()[0]: line.split()[1:] for line in r.out.splitlines()}
    assert got["/run/guestagent"] == ["root", "guestagent-admin", "750"], r
    assert got["/var/lib/guestagent"] == ["root", "root", "755"], r
    assert got["/var/log/guestagent"] == ["root", "root", "750"], r
    assert got["/var/lib/waagent"] == ["root", "root", "700"], r


def test_systemd_analyze_verify(agent_vm):
    paths = " ".join(f"/usr/lib/systemd/system/{u}" for u in UNITS)
    r = agent_vm.run(f"systemd-analyze verify {paths}", timeout=120)
    assert r.rc == 0 and r.out.strip() == "" and r.err.strip() == "", r


def test_sysusers_and_tmpfiles_parse(agent_vm):
    r = agent_vm.run("systemd-sysusers --dry-run /usr/lib/sysusers.d/guestagent.conf; "
                     "systemd-tmpfiles --create /usr/lib/tmpfiles.d/guestagent.conf")
    assert r.rc == 0 and "Failed" not in r.err and "ignoring" not in r.err.lower(), r


def test_vm_identity_devices_and_platform(agent_vm):
    assert agent_vm.run("cat /sys/class/dmi/id/product_uuid").out.strip() == agent_vm.uuid
    agent_vm.run("test -b /dev/sr0 && test -b /dev/vdb", check=True)
    # The platform on the host answers through the slirp forward; nothing else is reachable.
    r = agent_vm.run("curl -sS -o /dev/null -w '%{http_code}' --max-time 20 "
                     "'http://10.0.2.100/?comp=versions'")
    assert r.rc == 0 and r.out.strip().startswith(("2", "4")), r
    r = agent_vm.run("curl -sS -o /dev/null --max-time 5 http://10.0.2.2/")
    assert r.rc != 0, r
