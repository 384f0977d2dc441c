"""`guestagentd`: the root supervisor's entry point.

    guestagentd [--config PATH] [--foreground | --daemonize]
    guestagentd --check-config [--config PATH]

--foreground (the default) is what systemd runs (Type=notify); --daemonize (python-daemon)
is for hosts without systemd (`waagent -start`, cli/waagent.py). Exit codes: see parse_args.
"""

import logging
import os
import sys
import types

import config
from ipc import handshake

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_CONFIG = 2
EXIT_START = 3
PROCTITLE = handshake.title("supervisor", privileged=True)


def parse_args(argv):
    if not argv:
        # What systemd runs: every default. argparse (with gettext and textwrap, ~0.3 MiB)
        # would stay in the root process for the life of the VM for nothing (issue 17).
        return types.SimpleNamespace(config=config.DEFAULT_PATH, check_config=False,
                                     foreground=False, daemonize=False)
    return _parser().parse_args(argv)


def _parser():
    import argparse
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
    return p


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
    return console


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
    import launch
    launch.tune_malloc()   # before the broker's pool threads (issue 17: the idle PSS)
    launch.no_huge_pages()
    zygote = None
    if conf["Agent.Spawner"] == "zygote":
        # Its preload runs beside our own imports and set-up, not after them (issue 17).
        from supervisor.spawner import Zygote, environment
        zygote = Zygote(sys.executable, environment(path, bool(conf["Agent.TestHooks"])),
                        logging.getLogger("guestagent.supervisor"))
        zygote.begin()
    from supervisor.loop import Supervisor
    from supervisor.notify import Notifier
    try:
        console = _setup_logging(conf)
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
    sup = Supervisor(conf, path, console, zygote=zygote)
    try:
        sup.open(Notifier())
    except (RuntimeError, OSError) as e:
        log.error("event=start_failed error=%r", str(e))
        return EXIT_START
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
