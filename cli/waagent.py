"""`waagent`: the command line of the Azure Linux VM Agent, kept so images and scripts that call
it keep working. Importing this module does nothing (extensions load /usr/sbin/waagent with
imp.load_source); only main() acts.

As waagent: an argument may start with any number of `-` or `/`; the first unknown argument
prints the help. Verbs: -daemon (the supervisor, in the foreground), -start (the supervisor,
detached), -version, -show-configuration, -help, -collect-logs [-full], -deprovision,
-deprovision+user [-force], -provision, -run-exthandlers, -register-service,
-setup-firewall=IP, -serialconsole; flags -verbose, -force, -debug, -full,
-configuration-path:PATH. Deprovisioning is cli/deprovision.py; -provision and
-run-exthandlers start the worker that does that work (agentctl start); -setup-firewall says
what to run instead.
"""

import os
import platform
import re
import socket
import subprocess
import sys
import time
from typing import List, Optional

from config.version import GUESTAGENT_VERSION, WAAGENT_VERSION

VERBS = ("deprovision+user", "deprovision", "daemon", "start", "register-service",
         "run-exthandlers", "version", "show-configuration", "help", "usage", "?",
         "collect-logs", "provision", "serialconsole")
FLAGS = ("verbose", "force", "debug", "full")
CONFIG_PATH_RE = re.compile(r"[\w/.\-_]+")

USAGE = """\
usage: waagent [-verbose] [-force] [-help] -configuration-path:<path>
               -deprovision[+user] | -version | -show-configuration | -daemon | -start
               | -collect-logs [-full] | -serialconsole | -register-service | -help
               | -provision | -run-exthandlers (start guestagentd's provisioning or
               extensions worker now) | -setup-firewall=<IPv4> (says what to run instead)

guestagent %s (compatible with WALinuxAgent %s). Operators: see also `agentctl --help`.
""" % (GUESTAGENT_VERSION, WAAGENT_VERSION)

# Exit codes: waagent exits 0 even when a command fails [quirk]; we keep 0 for success and
# give failures a non-zero status, which no caller of waagent relies on being 0.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNSUPPORTED = 0, 1, 2, 3

class Invocation:
    def __init__(self):
        self.verb: Optional[str] = None
        self.flags = set()
        self.config_path: Optional[str] = None
        self.firewall_address: Optional[str] = None
        self.error: Optional[str] = None
        self.unknown: Optional[str] = None


def parse_args(argv: List[str]) -> Invocation:
    inv = Invocation()
    for arg in argv:
        word = arg.lstrip("-/")
        if word.startswith("configuration-path:"):
            path = word.split(":", 1)[1]
            if not CONFIG_PATH_RE.fullmatch(path):
                inv.error = "invalid configuration path %r" % path
                return inv
            if not os.path.exists(path):
                inv.error = "configuration file %s does not exist" % path
                return inv
            inv.config_path = path
        elif word.startswith("setup-firewall="):
            inv.verb, inv.firewall_address = "setup-firewall", word.split("=", 1)[1]
        elif word in FLAGS:
            inv.flags.add(word)
        elif word in VERBS and inv.verb is None:
            inv.verb = "help" if word in ("usage", "?") else word
        else:
            inv.verb, inv.unknown = "help", arg    # waagent: the first unknown argument means help
            break
    return inv


def distro() -> str:
    try:
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        return "%s %s" % (fields.get("ID", "linux").strip('"'),
                          fields.get("VERSION_ID", "").strip('"'))
    except OSError:
        return "linux"


def show_configuration(path: str) -> int:
    from config import ConfigError, load
    from config.keys import BY_NAME
    from config.shipped import format_value
    try:
        conf = load(path, report=False)
    except ConfigError as e:
        print("waagent: %s" % e, file=sys.stderr)
        return EXIT_FAILED
    for name, value in conf.items():
        print("%s = %s" % (name, format_value(BY_NAME[name], value) if value is not None
                           else "None"))
    for problem in conf.problems:
        print("waagent: %s" % (problem,), file=sys.stderr)
    return EXIT_FAILED if conf.problems else EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `waagent -version | head -1`: the reader left. Quiet, as cat is; stdout goes to
        # /dev/null so the interpreter's last flush does not print a second traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Optional[List[str]] = None) -> int:
    from config import DEFAULT_PATH
    inv = parse_args(sys.argv[1:] if argv is None else argv)
    if inv.error:
        print("waagent: %s" % inv.error, file=sys.stderr)
        return EXIT_USAGE
    path = inv.config_path or DEFAULT_PATH
    verb = inv.verb or "help"
    if verb == "help":
        sys.stdout.write(USAGE)
        return EXIT_USAGE if inv.unknown or inv.verb is None else EXIT_OK
    if verb == "version":
        print("WALinuxAgent-%s running on %s" % (WAAGENT_VERSION, distro()))
        print("Python: %s" % platform.python_version())
        print("Goal state agent: %s" % WAAGENT_VERSION)
        print("guestagent: %s" % GUESTAGENT_VERSION)
        return EXIT_OK
    if verb == "show-configuration":
        return show_configuration(path)
    if verb == "daemon":
        from supervisor import daemon
        return daemon.main(["--config", path])
    if verb == "start":
        return start_detached(path)
    if verb == "collect-logs":
        # The supervisor runs the log collector and this returns when it has exited, with
        # the bundle's path, size and what was left out (agentctl collect-logs); -full adds
        # waagent's full manifest (system configuration).
        from cli import agentctl
        return agentctl.main(["--config", path, "collect-logs"] + ["--full"] * ("full" in inv.flags))
    if verb in ("deprovision", "deprovision+user"):
        return deprovision(path, verb == "deprovision+user", "force" in inv.flags,
                           "verbose" in inv.flags)
    if verb == "serialconsole":
        return serial_console(path)
    if verb == "register-service":
        return register_service()
    if verb in WORKER_VERBS:
        return run_worker(path, verb)
    print("waagent: -%s: %s" % (verb, INSTEAD[verb]), file=sys.stderr)
    return EXIT_UNSUPPORTED


# waagent's verbs whose work is a guestagentd worker's: the running supervisor starts that
# worker now (`agentctl start WORKER`; root). -provision runs provisioning again, which says
# "already finished this boot" on a provisioned VM, as waagent's provision handler returns at
# once there; -run-exthandlers (waagent's ext-handler loop) makes sure the extensions worker
# runs, and returns: the loop is the worker, not this process.
WORKER_VERBS = {"provision": "provisioning", "run-exthandlers": "extensions"}

# The verbs not done here: what to run instead, in one line.
INSTEAD = {
    "setup-firewall": "the WireServer firewall belongs to guestagentd: set OS.EnableFirewall=y "
                      "in /etc/waagent.conf and run `systemctl restart guestagent.service` (the "
                      "supervisor installs nft table inet guestagent at start, before its "
                      "workers, and monitoring re-checks it every OS.EnableFirewallPeriod; a "
                      "former waagent's rules and waagent-network-setup.service are removed "
                      "then)",
}


def _require_root(what: str) -> bool:
    if os.geteuid() != 0:
        print("waagent: %s must run as root" % what, file=sys.stderr)
        return False
    return True


def deprovision(path: str, with_user: bool, force: bool, verbose: bool) -> int:
    from cli.deprovision import Deprovision
    from config import ConfigError, load
    if not _require_root("-deprovision"):
        return EXIT_FAILED
    try:
        conf = load(path, report=False)
    except ConfigError as e:
        print("waagent: %s" % e, file=sys.stderr)
        return EXIT_FAILED
    job = Deprovision(conf, root=conf["OS.SysRoot"] or "/", with_user=with_user,
                      verbose=verbose)
    return job.run(force)


def run_worker(path: str, verb: str) -> int:
    from cli import agentctl
    worker = WORKER_VERBS[verb]
    print("waagent: -%s: guestagentd's %s worker does it: agentctl start %s"
          % (verb, worker, worker), file=sys.stderr)
    return agentctl.main(["--config", path, "start", worker])


def serial_console(path: str) -> int:
    # console=ttyS0 earlyprintk=ttyS0 in /etc/default/grub and the grub config, as waagent 2.0
    # did (cli/serialconsole.py, issue 12).
    from cli.serialconsole import main as serial_main
    return serial_main(path)


def register_service() -> int:
    # waagent registers its own unit; ours is installed by the package: enable and start it.
    if not _require_root("-register-service"):
        return EXIT_FAILED
    if not os.path.isdir("/run/systemd/system"):
        print("waagent: -register-service: systemd is not running; start the agent with "
              "`waagent -start`", file=sys.stderr)
        return EXIT_FAILED
    return subprocess.call(["systemctl", "enable", "--now", "guestagent.service"],
                           stdin=subprocess.DEVNULL)


def _answers(sock_path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(sock_path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def start_detached(config_path: str, timeout: float = 30.0) -> int:
    """`waagent -start`: a detached supervisor (`guestagentd --daemonize`); returns once its
    control socket answers (at once if one already does), EXIT_START if it did not come up."""
    from cli.agentctl import socket_path
    from supervisor.daemon import EXIT_START
    config_path = os.path.abspath(config_path)
    sock_path = socket_path(config_path)
    if _answers(sock_path):
        return EXIT_OK
    rc = subprocess.call([sys.executable, "-m", "supervisor.daemon", "--daemonize",
                          "--config", config_path], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while rc == 0 and time.monotonic() < deadline:
        if _answers(sock_path):
            return EXIT_OK
        time.sleep(0.05)
    return rc or EXIT_START


if __name__ == "__main__":
    sys.exit(main())
