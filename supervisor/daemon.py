"""`guestagentd`: the root supervisor's entry point.

    guestagentd [--config PATH] [--foreground | --daemonize]
    guestagentd --check-config [--config PATH]

--foreground (the default) is what systemd runs (Type=notify, logs to stderr with journald
level prefixes). --daemonize detaches with python-daemon for hosts without systemd; `waagent
-start` uses start_detached() and `waagent -daemon` calls main() in the foreground.
--check-config prints every unknown key and bad value with file and line and exits 1 if there
is any (2 if the file cannot be read at all).

Exit codes: 0 stopped cleanly, 1 config problems (--check-config), 2 unusable config or
options, 3 could not start (another supervisor runs, a folder is not ours).
"""

import argparse
import logging
import os
import socket
import subprocess
import sys
import time

import config
from ipc import handshake

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_CONFIG = 2
EXIT_START = 3
PROCTITLE = handshake.title("supervisor", privileged=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="guestagentd", description="The guestagent supervisor (runs as root).",
        epilog="Exit codes: 0 clean stop, 1 config problems (--check-config), "
               "2 unusable config, 3 could not start.")
    p.add_argument("--config", default=config.DEFAULT_PATH, metavar="PATH",
                   help="waagent.conf to read (default %(default)s)")
    p.add_argument("--check-config", action="store_true",
                   help="report every unknown key and bad value with file and line, then exit")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--foreground", action="store_true",
                      help="stay in the foreground (the default; what systemd runs)")
    mode.add_argument("--daemonize", action="store_true",
                      help="detach from the terminal (hosts without systemd)")
    return p.parse_args(argv)


def check_config(path: str, conf) -> int:
    for problem in conf.problems:
        print(problem)
    # Warnings (keys not applied yet) do not fail the check: the agent runs with the file.
    for warning in conf.not_applied:
        print(warning)
    warnings = " and %d warning(s) (keys not applied yet)" % len(conf.not_applied) \
        if conf.not_applied else ""
    if conf.problems:
        print("%s: %d problem(s)%s" % (path, len(conf.problems), warnings), file=sys.stderr)
        return EXIT_PROBLEMS
    print("%s: no problems%s" % (path, warnings))
    return EXIT_OK


def _ensure_std_fds() -> None:
    # fds 0-2 must exist so no socket or pipe we open lands on them.
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open("/dev/null", os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _setup_logging(conf):
    from loglines import Console, LogFile
    from supervisor.logs import SupervisorHandler
    log_dir = conf["Agent.LogDir"]
    os.makedirs(log_dir, mode=0o750, exist_ok=True)
    console = Console(conf["Logs.Console"], conf["Logs.Verbose"])
    logfile = LogFile(os.path.join(log_dir, "supervisor.log"), conf["Agent.LogMaxBytes"],
                      conf["Agent.LogBackups"])
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(SupervisorHandler(logfile, console))
    root.setLevel(logging.DEBUG if conf["Logs.Verbose"] else logging.INFO)
    return console, logfile


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    path = os.path.abspath(args.config)
    try:
        conf = config.load(path, report=False)
    except config.ConfigError as e:
        print("guestagentd: %s" % e, file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        return check_config(path, conf)
    if args.daemonize:
        import daemon  # python-daemon, only on hosts without systemd
        with daemon.DaemonContext(working_directory="/", umask=0o022, detach_process=True):
            return run(conf, path)
    return run(conf, path)


def run(conf, path: str) -> int:
    _ensure_std_fds()
    os.umask(0o022)
    try:
        import setproctitle
        setproctitle.setproctitle(PROCTITLE)
    except ImportError:
        pass
    from supervisor.loop import Supervisor
    from supervisor.notify import Notifier
    try:
        console, _ = _setup_logging(conf)
    except OSError as e:
        print("guestagentd: cannot open the log folder: %s" % e, file=sys.stderr)
        return EXIT_START
    log = logging.getLogger("guestagent.supervisor")
    for problem in conf.problems:
        log.warning("event=config_problem %s", problem)
    for warning in conf.not_applied:
        log.warning("event=config_not_applied key=%s at=%s:%d %s", warning.key, warning.path,
                    warning.line, warning.message[len("warning: "):])
    if os.geteuid() != 0:
        log.warning("event=not_root workers run as uid %d, not as their own users",
                    os.geteuid())
    sup = Supervisor(conf, path, console)
    try:
        sup.open(Notifier())
    except (RuntimeError, OSError) as e:
        log.error("event=start_failed error=%r", str(e))
        return EXIT_START
    return sup.run()


def control_socket(config_path: str = config.DEFAULT_PATH) -> str:
    conf = config.load(config_path, report=False)
    from supervisor.control import SOCKET_NAME
    return os.path.join(conf["Agent.RuntimeDir"], SOCKET_NAME)


def is_running(config_path: str = config.DEFAULT_PATH) -> bool:
    """Does a supervisor answer on this configuration's control socket?"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(control_socket(config_path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def start_detached(config_path: str = config.DEFAULT_PATH, timeout: float = 30.0) -> int:
    """`waagent -start`: start a detached supervisor and return once its control socket
    answers (0), or 0 at once if one already runs; EXIT_START if it did not come up."""
    config_path = os.path.abspath(config_path)
    if is_running(config_path):
        return EXIT_OK
    rc = subprocess.call([sys.executable, "-m", "supervisor.daemon", "--daemonize",
                          "--config", config_path], stdin=subprocess.DEVNULL)
    if rc != 0:
        return rc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(config_path):
            return EXIT_OK
        time.sleep(0.05)
    return EXIT_START


if __name__ == "__main__":
    sys.exit(main())
