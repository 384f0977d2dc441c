"""agentctl: drive a running guestagent supervisor over its control socket.

One request per command over `<Agent.RuntimeDir>/control.sock`; the supervisor checks who we
are from the kernel (SO_PEERCRED): root may do everything, guestagent-admin may read
(status, logs, version).
"""

import argparse
import codecs
import json
import os
import sys
import time

import config
from ipc import framing
from ipc.channel import Channel
from ipc.errors import DENIED, NOT_FOUND, UNKNOWN_VERB, ChannelClosed, IpcError
from redaction import escape_controls

EXIT_OK = 0
EXIT_FAILED = 1        # the command ran and did not succeed (e.g. restart: worker failed)
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3   # no supervisor answers on the control socket (LSB "not running")
EXIT_REFUSED = 4       # not root / not guestagent-admin, or a verb needing root (LSB 4)
EXIT_UNKNOWN = 5       # no such worker
EXIT_NOT_ALL_RUNNING = 6  # status: a worker shown is not where it should be (see healthy)

EPILOG = """\
commands:
  status [WORKER] [--json]   state, pid, uptime, restarts, next run, RSS, CPU%%, last exit of
                             each worker, and the spawner
  start WORKER               start a stopped, exited or FATAL worker; waits for RUNNING (a
                             periodic worker: runs it now)
  stop WORKER                stop a worker (it stays stopped until started; no timer runs it)
  restart WORKER             stop then start; returns when RUNNING again or says why not
  collect-logs [--full]      run the log collector now; returns when it has exited (root)
  logs WORKER [-n N] [-f]    the last N lines of the worker's log; -f follows it
  version                    the supervisor's version

exit codes:
  0  done                          4  refused: needs root (guestagent-admin may only read)
  1  the command failed            5  no such worker
  2  usage error                   6  status: a worker shown is not healthy: a service
  3  the supervisor is not running    not RUNNING, provisioning not done with exit 0, a
                                      periodic worker's last run failed or it is FATAL
"""


class Refused(Exception):
    pass


class Failure(Exception):
    def __init__(self, message, code=EXIT_FAILED):
        super().__init__(message)
        self.code = code


def parse_args(argv):
    p = argparse.ArgumentParser(prog="agentctl", description="Control the guestagent supervisor.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=config.DEFAULT_PATH, metavar="PATH",
                   help="waagent.conf naming Agent.RuntimeDir (default %(default)s)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    s = sub.add_parser("status", help="show the workers")
    s.add_argument("worker", nargs="?")
    s.add_argument("--json", action="store_true", help="print the records as JSON")
    for name in ("start", "stop", "restart"):
        c = sub.add_parser(name, help="%s a worker" % name)
        c.add_argument("worker")
    lg = sub.add_parser("logs", help="print (and follow) a worker's log")
    lg.add_argument("worker")
    lg.add_argument("-n", type=int, default=20, metavar="N", help="lines (default 20)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    sub.add_parser("version", help="the supervisor's version")
    sub.add_parser("collect-logs", help="run the log collector now and wait for it").add_argument(
        "--full", action="store_true", help="waagent's -full manifest too (system configuration)")
    return p.parse_args(argv)


def socket_path(config_path: str) -> str:
    try:
        conf = config.load(config_path, report=False)
    except config.ConfigError:
        if config_path != config.DEFAULT_PATH:
            raise
        conf = config.defaults()
    return os.path.join(conf["Agent.RuntimeDir"], "control.sock")


def connect(path: str) -> Channel:
    try:
        return Channel.connect(path, framing.CONTROL_CAP)
    except PermissionError:
        raise Refused("permission denied on %s: only root and guestagent-admin may use it"
                      % path) from None
    except (FileNotFoundError, ConnectionRefusedError):
        raise Failure("guestagentd is not running (nothing answers on %s)" % path,
                      EXIT_NOT_RUNNING) from None
    except OSError as e:
        raise Failure("cannot reach %s: %s" % (path, e.strerror or e), EXIT_NOT_RUNNING) from None


def call(path: str, verb: str, args=None, timeout=None):
    channel = connect(path)
    try:
        return channel.call(verb, args or {}, timeout)
    except ChannelClosed:
        raise Failure("guestagentd closed the connection (stopping?)", EXIT_NOT_RUNNING) from None
    except IpcError as e:
        if e.code == DENIED:
            raise Refused(e.message) from None
        if e.code == NOT_FOUND:
            raise Failure(e.message, EXIT_UNKNOWN) from None
        if e.code == UNKNOWN_VERB:
            raise Failure("the supervisor does not know %s (version mismatch?)" % verb) from None
        raise Failure("%s: %s" % (e.code, e.message)) from None
    finally:
        channel.close()


def human_bytes(n):
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%.1f %s" % (n, unit)) if unit != "B" else "%d B" % n
        n /= 1024.0


def human_time(seconds):
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % (seconds // 60, seconds % 60)
    if seconds < 86400:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)


def healthy(w) -> bool:
    """Is this worker where it should be? A service RUNNING; a once-per-boot worker running or
    done with exit 0; a periodic one running, waiting, or after a clean run."""
    lifetime = w.get("lifetime", "service")
    if lifetime == "service":
        return w["state"] == "RUNNING"
    if w["state"] in ("STARTING", "RUNNING"):
        return True
    if lifetime == "once":
        return w["state"] == "EXITED" and w["last_exit"] == "exit 0"
    return w["state"] in ("STOPPED", "EXITED") and w["last_exit"] in (None, "exit 0")


def shown(value) -> str:
    """A value from the supervisor as printed: a worker sets its status message, so nothing
    it holds reaches the terminal raw (escape sequences, CR, bidi overrides)."""
    return escape_controls(str(value))


def print_status(result, out=sys.stdout):
    sup = result["supervisor"]
    out.write("supervisor  pid %d  up %s  rss %s  version %s  config %s\n" % (
        sup["pid"], human_time(sup["uptime"]), human_bytes(sup["rss"]), shown(sup["version"]),
        shown(sup["config"])))
    sp = result.get("spawner")
    if sp is not None:
        out.write("spawner     %s  pid %s  up %s  rss %s  method %s  starts %d%s\n" % (
            shown(sp["state"]), sp["pid"] or "-", human_time(sp["uptime"]),
            human_bytes(sp["rss"]), shown(sp["method"]), sp["starts"],
            ("  (%s)" % shown(sp["message"])) if sp["message"] else ""))
    rows = [("WORKER", "STATE", "PID", "UPTIME", "RESTARTS", "NEXT RUN", "RSS", "CPU%",
             "LAST EXIT")]
    for w in result["workers"]:
        nxt = w.get("next_run")
        rows.append((shown(w["name"]), shown(w["state"]), str(w["pid"] or "-"),
                     human_time(w["uptime"]),
                     str(w["restarts"]), "-" if nxt is None else "in " + human_time(nxt),
                     human_bytes(w["rss"]),
                     "-" if w["cpu_percent"] is None else "%.1f" % w["cpu_percent"],
                     shown(w["last_exit"] or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        out.write("  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + "  " + r[-1]
                  + "\n")
    for w in result["workers"]:   # why a worker that is not running is where it is
        if w["message"] and w["state"] not in ("STARTING", "RUNNING"):
            msg = w["message"]
            out.write("  %s\n" % shown(msg if msg.startswith(w["name"] + ":") else
                                        "%s: %s" % (w["name"], msg)))


class LogOutput:
    """`agentctl logs` output: the log's bytes with every control character but the newline
    escaped (the supervisor escapes what it writes; a file from an older version, or bytes
    split between two reads, are escaped here all the same)."""

    def __init__(self, out):
        self.out = out
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        self.out.write("\n".join(escape_controls(part) for part in text.split("\n"))
                       .encode("utf-8"))

    def flush(self) -> None:
        self.out.flush()


def tail_lines(fd: int, n: int) -> bytes:
    size = os.fstat(fd).st_size
    if n <= 0:
        return b""
    pos, data = size, b""
    while pos > 0 and data.count(b"\n") <= n:
        step = min(65536, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-n:])


SUMMARY = "last-collection.json"
PROGRESS_EVENTS = ("event=collect_start", "event=collect_progress", "event=collect_partial",
                   "event=collect_done", "event=collect_upload")


def _follow_progress(fd, pos, stop, out):
    """Print the collector's progress lines from its log as they come (a terminal only)."""
    rest = b""
    while True:
        stopped = stop.wait(0.3)
        chunk = os.pread(fd, 65536, pos)
        if not chunk:
            if stopped:   # the run is over and every line it wrote has been read
                return
            continue
        pos += len(chunk)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            text = line.decode("utf-8", "replace")
            if any(e in text for e in PROGRESS_EVENTS):
                out.write("collect-logs: %s\n" % shown(text.split(": ", 1)[-1][:200]))
                out.flush()


def _read_summary(config_path, since):
    """The collector's summary of this run (root reads the worker's own folder)."""
    try:
        conf = config.load(config_path, report=False)
    except config.ConfigError:
        conf = config.defaults()
    path = os.path.join(conf["Agent.StateDir"], "logcollector", SUMMARY)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_mtime < since - 1 or st.st_size > 4 << 20:
            return None
        try:
            summary = json.loads(f.read())
        except ValueError:
            return None
    return summary if isinstance(summary, dict) else None


def cmd_collect_logs(path, config_path, out=None, full=False):
    """Run the collector, show its progress on a terminal, end with the bundle's path, size
    and what was left out and why."""
    import threading
    out = out or sys.stdout
    started = time.time()
    stop, follower, fd = threading.Event(), None, None
    if sys.stderr.isatty():
        try:
            _, fds = call(path, "control.logs", {"worker": "logcollector"})
            fd = fds[0] if fds else None
        except (Refused, Failure):
            fd = None
        if fd is not None:
            follower = threading.Thread(target=_follow_progress,
                                        args=(fd, os.fstat(fd).st_size, stop, sys.stderr),
                                        daemon=True)
            follower.start()
    try:
        result, _ = call(path, "control.collect_logs", {"full": True} if full else {},
                         timeout=900)
    finally:
        stop.set()
        if follower is not None:
            follower.join(2)
        if fd is not None:
            os.close(fd)
    w = result["worker"]
    summary = _read_summary(config_path, started)
    if summary is None:
        print(shown("%s: %s (%s)%s" % (w["name"], w["state"], w["last_exit"] or "-",
                                       (": " + w["message"]) if w["message"] else "")), file=out)
        print("agentctl: the collector left no summary of this run: no bundle", file=sys.stderr)
        return EXIT_FAILED
    partial = summary.get("partial")
    print(shown("bundle: %s (%s bytes, %s files, %s bytes before compression)%s" % (
        summary.get("path"), summary.get("size"), summary.get("files"), summary.get("bytes"),
        "" if not partial else " PARTIAL: %s" % partial)), file=out)
    print(shown("uploaded to the HostGAPlugin" if summary.get("uploaded") else
                "not uploaded: %s" % summary.get("upload_error")), file=out)
    left = summary.get("left_out") or []
    print("left out: %d" % len(left), file=out)
    for item in left[:200]:
        if isinstance(item, dict):
            print(shown("  %s: %s" % (item.get("name"), item.get("why"))), file=out)
    if len(left) > 200:
        print("  ... %d more (results.txt in the bundle lists them all)" % (len(left) - 200),
              file=out)
    return EXIT_OK


def cmd_logs(path, worker, n, follow, out=None):
    out = LogOutput(out or sys.stdout.buffer)
    result, fds = call(path, "control.logs", {"worker": worker})
    if len(fds) != 1:
        raise Failure("the supervisor sent no log descriptor")
    fd = fds[0]
    out.write(tail_lines(fd, n))
    out.flush()
    if not follow:
        os.close(fd)
        return EXIT_OK
    pos = os.fstat(fd).st_size
    log_path = result["path"]
    try:
        while True:
            chunk = os.pread(fd, 65536, pos)
            if chunk:
                pos += len(chunk)
                out.write(chunk)
                out.flush()
                continue
            # Rotated? Then the path names a new file: finish the old one, ask for the new.
            try:
                rotated = os.stat(log_path).st_ino != os.fstat(fd).st_ino
            except OSError:
                rotated = False
            if rotated:
                os.close(fd)
                _, fds = call(path, "control.logs", {"worker": worker})
                fd, pos = fds[0], 0
                continue
            time.sleep(0.2)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        path = socket_path(args.config)
    except config.ConfigError as e:
        print("agentctl: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "status":
            result, _ = call(path, "control.status",
                             {"worker": args.worker} if args.worker else {})
            if args.json:
                json.dump(result, sys.stdout, indent=2)
                sys.stdout.write("\n")
            else:
                print_status(result)
            return EXIT_OK if all(healthy(w) for w in result["workers"]) \
                else EXIT_NOT_ALL_RUNNING
        if args.command in ("start", "stop", "restart"):
            result, _ = call(path, "control." + args.command, {"worker": args.worker})
            w = result["worker"]
            print("%s: %s%s" % (shown(w["name"]), shown(w["state"]),
                                " (pid %d)" % w["pid"] if w["pid"] else ""))
            return EXIT_OK
        if args.command == "collect-logs":
            return cmd_collect_logs(path, args.config, full=args.full)
        if args.command == "logs":
            return cmd_logs(path, args.worker, args.n, args.follow)
        if args.command == "version":
            result, _ = call(path, "control.version")
            print(shown("guestagent %s (python %s, waagent-compatible %s)" % (
                result["version"], result["python"], result["waagent_version"])))
            return EXIT_OK
    except Refused as e:
        print("agentctl: refused: %s" % shown(e), file=sys.stderr)
        return EXIT_REFUSED
    except Failure as e:
        print("agentctl: %s" % shown(e), file=sys.stderr)
        return e.code
    except BrokenPipeError:
        # `agentctl logs -f | head`: the reader left. stdout goes to /dev/null so the
        # interpreter's last flush does not print a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
