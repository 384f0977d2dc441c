"""`make deb`: build guestagent's Debian package with dpkg-deb alone (no network, no debhelper).

    python3 packaging/build_deb.py OUT_DIR

The package installs the code privately under /usr/lib/guestagent, a venv-shaped folder
(pyvenv.cfg, bin/python -> /usr/bin/python3, lib/pythonX.Y/site-packages) that sees Debian's
python3-* packages: `-I -m supervisor.daemon` finds our packages there and nowhere else, so
`supervisor` shadows nothing (the Supervisor project's package has the same name). Then the
units, sysusers.d, tmpfiles.d, /usr/sbin/waagent and agentctl, /etc/waagent.conf as a
conffile, and the maintainer scripts of packaging/debian/. It Conflicts/Replaces/Provides
waagent, so `dpkg -i` over an image with Debian's waagent removes that package.

site-packages is named by the building python's version, so the package depends on that
python3 minor version (Debian 12: 3.11), as dh_python3 does for version-bound packages.
"""

import os
import shutil
import stat
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = "/usr/lib/guestagent"
UNITS = ("guestagent.service", "guestagent.slice", "guestagent-extensions.slice",
         "guestagent-logcollector.slice")
# Debian 12's packages of the libraries DESIGN.md names; crypt(3) is libxcrypt's libcrypt.so.1
# through ctypes (workers/provisioning/password.py); passwd, mount and util-linux are what the
# broker drives (useradd, chpasswd, mount, mkswap, eject); openssl makes the transport key, as
# for waagent (supervisor/privileged/transport_key.py).
DEPENDS = ["python3-psutil (>= 5.9)", "python3-requests (>= 2.28)",
           "python3-cryptography (>= 38)", "python3-asn1crypto (>= 1.5)",
           "python3-daemon (>= 2.3)", "python3-setproctitle (>= 1.3)",
           "python3-defusedxml (>= 0.7)", "libcrypt1", "passwd", "mount", "util-linux",
           "openssl"]
ENTRY_POINTS = {"guestagentd": "supervisor.daemon", "agentctl": "cli.agentctl"}


def version() -> str:
    scope = {}
    with open(os.path.join(ROOT, "config", "version.py")) as f:
        exec(compile(f.read(), "version.py", "exec"), scope)
    return scope["GUESTAGENT_VERSION"]


def write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def normalise_modes(top: str) -> None:
    # Whatever the builder's umask: workers (other uids) read the code, nobody else writes it.
    for folder, dirs, files in os.walk(top):
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & stat.S_IXUSR
                os.chmod(path, 0o755 if executable else 0o644)


def build(out_dir: str) -> str:
    work = os.path.join(out_dir, "deb-build")
    shutil.rmtree(work, ignore_errors=True)
    stage = os.path.join(work, "root")
    pyver = "%d.%d" % sys.version_info[:2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "-w",
                    os.path.join(work, "wheel"), ROOT], check=True, cwd=ROOT)
    # setuptools leaves build/lib behind; a module deleted from the tree would ship next time.
    shutil.rmtree(os.path.join(ROOT, "build", "lib"), ignore_errors=True)
    (wheel,) = [n for n in os.listdir(os.path.join(work, "wheel")) if n.endswith(".whl")]

    # The private environment.
    lib = os.path.join(stage, PREFIX.lstrip("/"))
    site = os.path.join(lib, "lib", "python" + pyver, "site-packages")
    with zipfile.ZipFile(os.path.join(work, "wheel", wheel)) as z:
        z.extractall(site)
    write(os.path.join(lib, "pyvenv.cfg"),
          "home = /usr/bin\ninclude-system-site-packages = true\nversion = %s\n"
          % ".".join(map(str, sys.version_info[:3])))
    os.makedirs(os.path.join(lib, "bin"), 0o755)
    os.symlink("/usr/bin/python3", os.path.join(lib, "bin", "python"))
    os.symlink("python", os.path.join(lib, "bin", "python3"))
    for name, module in ENTRY_POINTS.items():
        write(os.path.join(lib, "bin", name),
              "#!%s/bin/python -I\nimport sys\nfrom %s import main\nsys.exit(main())\n"
              % (PREFIX, module), 0o755)

    # The system's side: units, users, folders, commands, configuration.
    unitdir = os.path.join(stage, "usr/lib/systemd/system")
    for unit in UNITS:
        with open(os.path.join(ROOT, "systemd", unit)) as f:
            write(os.path.join(unitdir, unit), f.read().replace("/opt/guestagent", PREFIX))
    for kind in ("sysusers", "tmpfiles"):
        with open(os.path.join(ROOT, "systemd", "guestagent.%s.conf" % kind)) as f:
            write(os.path.join(stage, "usr/lib/%s.d/guestagent.conf" % kind), f.read())
    with open(os.path.join(ROOT, "cli", "usr-sbin-waagent.in")) as f:
        write(os.path.join(stage, "usr/sbin/waagent"), f.read().replace("@VENV@", PREFIX), 0o755)
    os.symlink(PREFIX + "/bin/agentctl", os.path.join(stage, "usr/sbin/agentctl"))
    with open(os.path.join(ROOT, "etc", "waagent.conf")) as f:
        write(os.path.join(stage, "etc/waagent.conf"), f.read())
    with open(os.path.join(ROOT, "README.md")) as f:
        write(os.path.join(stage, "usr/share/doc/guestagent/README.md"), f.read())

    normalise_modes(stage)
    size_kib = sum(os.lstat(os.path.join(d, n)).st_size for d, _, files in os.walk(stage)
                   for n in files) // 1024 + 1
    major, minor = sys.version_info[:2]
    control = {
        "Package": "guestagent",
        "Version": version(),
        "Architecture": "all",
        "Maintainer": "guestagent maintainers <root@localhost>",
        "Installed-Size": str(size_kib),
        "Depends": ", ".join(["python3 (>= %d.%d)" % (major, minor),
                              "python3 (<< %d.%d)" % (major, minor + 1)] + DEPENDS),
        "Recommends": "systemd, nftables | iptables",   # the WireServer firewall
        "Conflicts": "waagent, walinuxagent",
        "Replaces": "waagent, walinuxagent",
        "Provides": "waagent",
        "Section": "admin",
        "Priority": "optional",
        "Description": "privilege-separated Azure Linux guest agent (replaces waagent)\n"
                       " guestagent provisions Azure VMs and runs their extensions as waagent\n"
                       " does, with the same /etc/waagent.conf, command line and on-disk\n"
                       " extension contract, but as a small root supervisor that forks\n"
                       " least-privilege workers.",
    }
    debian = os.path.join(stage, "DEBIAN")
    write(os.path.join(debian, "control"),
          "".join("%s: %s\n" % kv for kv in control.items()))
    write(os.path.join(debian, "conffiles"), "/etc/waagent.conf\n")
    for script in ("preinst", "postinst", "prerm", "postrm"):
        shutil.copy(os.path.join(ROOT, "packaging", "debian", script),
                    os.path.join(debian, script))
        os.chmod(os.path.join(debian, script), 0o755)
    os.chmod(debian, 0o755)

    deb = os.path.join(out_dir, "guestagent_%s_all.deb" % version())
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", stage, deb],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(work)
    return deb


if __name__ == "__main__":
    print(build(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "dist")))
