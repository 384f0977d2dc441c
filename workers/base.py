"""The common worker: what every worker process does whatever its job.

- takes its channel from the descriptor the supervisor passed (GUESTAGENT_CHANNEL_FD, fd 3);
- says `worker.hello` (and learns the heartbeat interval), runs its job's set-up, says
  `worker.ready` (it is RUNNING from then on);
- heartbeats from a thread, but only while the job's loop turns (the job calls `tick()`),
  while it waits for a reply from the supervisor, or while it is parked in `wait()` (with a
  deadline of its own: a loop that waits is not stuck, and need not wake just to tick): a
  stuck loop stops the heartbeats and the supervisor kills and restarts the worker;
- SIGTERM ends the job cleanly (WorkerStop is raised in the main thread) and exits 0;
- the supervisor going away (EOF on the channel) ends the worker;
- logs to stderr only, one line per record: `<UTC time> <LEVEL> <worker>[<pid>]: <message>`;
  the supervisor files, rotates, redacts and forwards the lines (loglines/).

A worker module is `Worker("name").run(job)` where `job(worker)` sets up, calls
`worker.ready()`, then loops calling `worker.tick()` and `worker.wait(seconds)` until it
returns or WorkerStop is raised. A job that ends (a once-per-boot or periodic worker, see
supervisor/table.py) returns; what it returns (an int, None for 0) is the exit status. Privileged effects: `worker.call("domain.verb", {...})`.
"""

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

from ipc import envelope, handshake
from ipc.channel import Channel
from ipc.errors import TIMEOUT, ChannelClosed, IpcError
from ipc.handshake import ENV_CHANNEL_FD, ENV_LOG_LEVEL, ENV_TEST_DIR

EXIT_CHANNEL_LOST = 4   # the supervisor is gone


class WorkerStop(BaseException):
    """Raised in the main thread by SIGTERM: unwind the job and exit cleanly."""


class UtcFormatter(logging.Formatter):
    def __init__(self, name: str):
        super().__init__("%(asctime)s %(levelname)s " + name + "[%(process)d]: %(message)s")

    def formatTime(self, record, datefmt=None):
        t = record.created
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (
            int(t * 1000) % 1000)

    def format(self, record):
        # One record, one line: a multi-line message or traceback is joined with " | ".
        return super().format(record).replace("\n", " | ")


def setup_logging(name: str) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UtcFormatter(name))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(os.environ.get(ENV_LOG_LEVEL, "INFO")
                  if os.environ.get(ENV_LOG_LEVEL) in ("DEBUG", "INFO") else "INFO")
    return logging.getLogger(name)


class Worker:
    def __init__(self, name: str):
        self.name = name
        self.log = setup_logging(name)
        self.channel: Optional[Channel] = None
        self.heartbeat_interval = 5.0
        self.stopping = threading.Event()
        self._last_tick = time.monotonic()
        self._last_call = 0.0   # when a broker call last came back: it counted as a beat
        self._waiting_until: Optional[float] = None   # parked in wait() until then
        self._calls = 0
        self._calls_lock = threading.Lock()
        self._ready = False
        self._test = _TestHooks(self) if os.environ.get(ENV_TEST_DIR) else None

    # ---- what a job uses ------------------------------------------------------------------
    def tick(self) -> None:
        """The job's loop turned: heartbeats may continue."""
        self._last_tick = time.monotonic()
        if self._test:
            self._test.on_tick()

    def ready(self) -> None:
        if not self._ready:
            self._ready = True
            self.channel.notify("worker.ready")
            self.log.info("ready")

    def status(self, message: str) -> None:
        self.channel.notify("worker.status", {"message": message[:200]})

    def call(self, verb: str, args: Optional[dict] = None, timeout: Optional[float] = None,
             fds=()):
        """A privileged verb through the broker (with descriptors to pass, if any);
        heartbeats continue while it runs."""
        with self._in_call():
            return self.channel.call(verb, args, timeout, fds)

    def begin(self, verb: str, args: Optional[dict] = None) -> int:
        """A slow privileged verb left to run in the broker while the job goes on; `collect`
        takes its reply (the job must collect what it begins: the broker runs it anyway)."""
        return self.channel.request(verb, args)

    def collect(self, verb: str, ident: int):
        """The reply to `begin`'s request, as `call` returns it."""
        with self._in_call():
            return self.channel.collect(verb, ident)

    @contextlib.contextmanager
    def _in_call(self):
        """Waiting on the broker: heartbeats continue meanwhile (the heartbeat thread)."""
        try:
            with self.working():
                yield
        finally:
            self._last_call = self._last_tick

    @contextlib.contextmanager
    def working(self):
        """A step of the job that is not a broker call but may take long and is bounded by
        its own deadlines (HTTP with timeouts, a package download within
        Protocol.DownloadTimeout): heartbeats continue meanwhile, as during a call."""
        with self._calls_lock:
            self._calls += 1
        try:
            yield
        finally:
            with self._calls_lock:
                self._calls -= 1
            self._last_tick = time.monotonic()

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, serving the channel; returns early on nothing but errors.
        Heartbeats continue meanwhile (the loop is parked here, not stuck), so a job may wait
        for its next round without waking once per heartbeat interval just to tick."""
        deadline = time.monotonic() + seconds
        self._waiting_until = deadline
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if self._test:    # test hooks act when the loop turns: once an interval
                    remaining = min(remaining, self.heartbeat_interval)
                try:
                    msg, fds = self.channel.receive(time.monotonic() + remaining)
                except IpcError as e:
                    if e.code != TIMEOUT:
                        raise
                    if not self._test:
                        return
                    self._waiting_until = None   # a hook that hangs is a stuck loop
                    self.tick()
                    self._waiting_until = deadline
                    continue
                for fd in fds:
                    os.close(fd)
                self.log.warning("unexpected message from the supervisor: %r", msg)
        finally:
            self._waiting_until = None
            self._last_tick = time.monotonic()

    # ---- lifecycle ------------------------------------------------------------------------
    def run(self, job: Optional[Callable[["Worker"], None]] = None) -> int:
        try:
            import setproctitle
            setproctitle.setproctitle(handshake.title(self.name))
        except ImportError:
            pass
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            fd = int(os.environ[ENV_CHANNEL_FD])
        except (KeyError, ValueError):
            self.log.error("no channel: %s must name the descriptor the supervisor passed",
                           ENV_CHANNEL_FD)
            return 2
        try:
            self.channel = Channel.from_fd(fd)
            if self._test:
                self._test.before_hello()
            result, _ = self.channel.call("worker.hello", {
                "worker": self.name, "pid": os.getpid(),
                "protocol": handshake.PROTOCOL_VERSION}, timeout=30)
            self.heartbeat_interval = result["heartbeat_interval"]
            self.log.debug("heartbeat every %.2fs", self.heartbeat_interval)
            if self._test:
                self._test.at_start()
            threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()
            return int((job or idle)(self) or 0)
        except WorkerStop:
            self.log.info("stopping on SIGTERM")
            return 0
        except ChannelClosed as e:
            self.log.error("the supervisor is gone (%s); exiting", e.message)
            return EXIT_CHANNEL_LOST
        finally:
            self.stopping.set()
            if self.channel is not None:
                self.channel.close()

    def _on_term(self, signum, frame):
        if not self.stopping.is_set():
            self.stopping.set()
            raise WorkerStop()

    def _heartbeats(self) -> None:
        interval = self.heartbeat_interval
        warned = False
        while not self.stopping.wait(interval):
            with self._calls_lock:
                in_call = self._calls > 0
            now = time.monotonic()
            # Parked in wait() within its deadline (and a beat's slack for the wake-up): idle,
            # not stuck. Past it the loop should have turned; if it has not, it is stuck.
            until = self._waiting_until
            waiting = until is not None and now <= until + interval
            stuck = not waiting and now - self._last_tick > 2 * interval
            if stuck and not in_call:
                if not warned:
                    self.log.warning("main loop has not turned for %.1fs: no heartbeat",
                                     time.monotonic() - self._last_tick)
                    warned = True
                continue
            warned = False
            if not in_call and time.monotonic() - self._last_call < interval:
                continue   # the supervisor took that call as a beat (an idle poll's only message)
            try:
                self.channel.notify("worker.heartbeat")
            except ChannelClosed:
                return


def idle(worker: Worker) -> None:
    """The job of a worker whose real job comes in a later issue: be supervised, do nothing."""
    worker.ready()
    while True:
        worker.tick()
        worker.wait(worker.heartbeat_interval)


def main(name: str, job: Optional[Callable[[Worker], None]] = None) -> None:
    sys.exit(Worker(name).run(job))


class _TestHooks:
    """Misbehaviour on demand, for tests/integration only.

    Reachable only when GUESTAGENT_TEST_DIR is in the environment, which the supervisor
    passes to workers only while Agent.TestHooks=y (off by default, never in production).
    The file `<dir>/<worker>` holds one action per line, each run once per process (a line
    `@PID action` applies to that process only, so its successor behaves):
    crash (exit 3 before ready), hang (the loop stops turning), garbage (a non-JSON frame),
    unknown-verb, denied-verb, invalid-args, slow-verb N (debug.sleep N seconds),
    chatty N (N log lines), secret (log secrets for the redaction test), exit0, env (log the
    environment, a random draw and the interpreter flags as JSON), attack (right after
    worker.hello, replace this worker's code with `<dir>/<worker>.attack.py`: the worst a
    compromised worker can do, from its own uid on its own channel; see
    tests/integration/security/; a script whose first line is `# before hello` runs before
    the worker's hello, in its place; only the first process to start it runs it).
    """

    def __init__(self, worker: Worker):
        self.worker = worker
        self.path = os.path.join(os.environ[ENV_TEST_DIR], worker.name)
        self.done = set()

    def actions(self):
        try:
            with open(self.path) as f:
                text = f.read(4096)
        except OSError:
            return []
        actions = []
        for line in text.splitlines():
            words = line.split()
            if words and words[0].startswith("@"):   # "@PID action": for that process only
                if words[0] != "@%d" % os.getpid():
                    continue
                words = words[1:]
            if words:
                actions.append(words)
        return actions

    def before_hello(self) -> None:
        """`attack` whose script's first line is `# before hello`: run it in place of the
        hello too (a worker that lies in its very first message)."""
        if ["attack"] not in self.actions():
            return
        try:
            with open(self.path + ".attack.py") as f:
                first = f.readline().strip()
        except OSError:
            return
        if first == "# before hello":
            self.attack()

    def at_start(self) -> None:
        for words in self.actions():
            if words[0] == "crash":
                self.worker.log.error("test hook: crashing before ready")
                os._exit(3)
            if words == ["env"]:   # at once: a run-once worker may end before it ticks
                self.done.add("env")
                self.env_report()
            if words == ["attack"]:
                self.attack()

    def attack(self) -> None:
        """Run the attack script in place of the job, then exit: the worker's code replaced.

        The script sees `worker`, `channel`, `envelope`, `report(key, value)` (one JSON line in
        `<dir>/results/<worker>.jsonl`, a folder the test makes world-writable) and
        `attempt(verb, args)`, which calls a verb and reports and returns its outcome:
        ["ok", result] | ["error", code, message] | ["closed", message]."""
        import json
        w = self.worker
        base = os.path.dirname(self.path)
        results = os.path.join(base, "results", w.name + ".jsonl")

        def report(key, value=None):
            with open(results, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "key": key, "value": value}) + "\n")

        counter = [100000]

        def attempt(verb, args=None, timeout=30.0, fds=()):
            """Send a raw request (no client-side check: an attacker skips them) and wait."""
            counter[0] += 1
            ident = counter[0]
            deadline = time.monotonic() + timeout
            try:
                w.channel.send(envelope.request(ident, verb, args or {}), fds)
                while True:
                    msg, got = w.channel.receive(deadline)
                    for fd in got:
                        os.close(fd)
                    if isinstance(msg, envelope.Reply) and msg.id == ident:
                        break
                outcome = ["ok", msg.result] if msg.ok else \
                    ["error", msg.error.code, msg.error.message]
            except ChannelClosed as e:
                outcome = ["closed", e.message]
            except IpcError as e:
                outcome = ["error", e.code, e.message]
            report(verb, outcome)
            return outcome

        # One process runs it: the resident worker the supervisor restarts after the attack
        # ended (the hook file still in place) behaves, so it cannot redo the script's calls
        # while the test looks at what the first run left.
        try:
            os.close(os.open(results, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return
        with open(self.path + ".attack.py") as f:
            code = f.read()
        namespace = {"worker": w, "channel": w.channel, "envelope": envelope, "os": os,
                     "report": report, "attempt": attempt, "__name__": "__attack__"}
        try:
            exec(compile(code, self.path + ".attack.py", "exec"), namespace)
            report("done")
        except BaseException as e:   # noqa: B902 - the verdict must reach the test
            report("crashed", "%s: %s" % (type(e).__name__, e))
        finally:
            os._exit(0)

    def on_tick(self) -> None:
        w = self.worker
        for words in self.actions():
            key = " ".join(words)
            if key in self.done or words[0] == "crash":
                continue
            self.done.add(key)
            action, arg = words[0], (words[1] if len(words) > 1 else None)
            w.log.info("test hook: %s", key)
            if action == "hang":
                while True:
                    time.sleep(3600)
            elif action == "garbage":
                w.channel.sock.sendall(b"\x00\x00\x00\x07garbage")
            elif action == "unknown-verb":
                w.channel.send(envelope.request(999, "nosuch.verb", {}))
            elif action == "denied-verb":
                w.channel.send(envelope.request(999, "control.stop", {"worker": "monitoring"}))
            elif action == "invalid-args":
                w.channel.send(envelope.notice("worker.status", {"message": 42}))
            elif action == "slow-verb":
                result, _ = w.call("debug.sleep", {"seconds": float(arg or 60)})
                w.log.info("test hook: slow verb returned %s", result)
            elif action == "chatty":
                for i in range(int(arg or 100)):
                    w.log.info("chatty line %05d %s", i, "x" * 60)
            elif action == "secret":
                w.log.info('settings {"protectedSettings": "TOPSECRET1", "adminPassword": '
                           '"TOPSECRET2"} url=https://a.blob.core.windows.net/c?sv=1&sig=TOPSECRET3')
            elif action == "exit0":
                sys.exit(0)
            elif action == "env":
                self.env_report()

    def env_report(self) -> None:
        """What a clean image has: tests compare spawn methods and check every worker."""
        import json
        import random
        w = self.worker
        with open("/proc/self/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        w.log.info("test hook: env %s", json.dumps({
            "env": dict(os.environ), "random": random.getrandbits(64),
            "status": {k: status.get(k) for k in (
                "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                "NoNewPrivs", "Umask", "PPid", "THP_enabled")},
            "isolated": sys.flags.isolated, "argv0": sys.argv[0],
            "main": getattr(sys.modules.get("__main__"), "__spec__", None) and
            sys.modules["__main__"].__spec__.name}, sort_keys=True))
