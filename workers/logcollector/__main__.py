"""The logcollector worker: manifest-driven log collection into a zip inside a slice with CPU
and memory limits, and its upload (protocol.md §8; issue 15).

Runs as guestagent-logs with guestagent-wire as its primary group, periodically and on demand
(supervisor/table.py, PERIODIC): the supervisor starts it `Debug.LogCollectorInitialDelay`
seconds after start-up and then every `Logs.CollectPeriod` seconds while `Logs.Collect=y`, and
on `agentctl collect-logs` / `waagent -collect-logs`, inside guestagent-logcollector.slice
(supervisor/slices.py). Each run:

1. asks the broker to expand the manifest (`logs.manifest`): the worker never names a path;
2. takes each file as a descriptor (`logs.open <index>`) in the broker's order (waagent's
   priorities, newest first) and streams it into the bundle (bundle.py: caps, redaction),
   then the journal of the agent's units (`logs.journal`);
3. watches its own anonymous memory (memory.py) and, over its budget, closes the bundle
   early, marked partial (results.txt and the zip comment) — it is never the slice's limit
   that ends it;
4. uploads the bundle to the HostGAPlugin (`PUT /vmAgentLog`), streamed from disk;
5. writes `last-collection.json` beside the bundle (what `agentctl collect-logs` prints: path,
   size, what was left out and why) and exits 0.

The platform client (requests, ~13 MiB of anonymous memory) is imported only for the upload,
after the bundle is closed: the collection runs in a third of waagent's 25 MiB.
"""

import importlib
import json
import os
import sys
import threading
import time
import uuid

import config
from ipc.errors import IpcError
from ipc.handshake import ENV_CONFIG
from workers.base import Worker
from workers.logcollector.bundle import Bundle, Stopped
from workers.logcollector.memory import MiB, Watch

BUNDLE = "logs.zip"
SUMMARY = "last-collection.json"
JOURNAL_NAME = "journal/guestagent.txt"
UPLOAD_ATTEMPTS = 3
PROGRESS_EVERY = 1.0


def collect(worker) -> int:
    worker.ready()
    worker.tick()
    conf = config.load(os.environ.get(ENV_CONFIG, config.DEFAULT_PATH))
    folder = os.path.join(conf["Agent.StateDir"], worker.name)
    started, cpu0 = time.monotonic(), time.process_time()
    watch = Watch(conf["Logs.CollectorAnonLimit"]).start()
    path = os.path.join(folder, BUNDLE)
    bundle = Bundle(path, _ticking(worker, watch),
                    sync=lambda fd: _in_thread(worker, os.fdatasync, fd))
    worker.log.info("event=collect_start bundle=%s budget_mib=%.1f cgroup_limit_mib=%s",
                    path, watch.budget / MiB,
                    "%.1f" % (watch.limit / MiB) if watch.limit else "none")
    try:
        _fill(worker, bundle, watch)
        size = bundle.close()
    except BaseException:
        watch.stop()
        bundle.abandon()
        raise
    summary = {"path": path, "size": size, "partial": bundle.partial,
               "files": len(bundle.collected), "bytes": bundle.used,
               "left_out": [{"name": n, "why": w} for n, w in bundle.left_out],
               "peak_anon_collection": watch.peak, "budget": watch.budget,
               "cgroup_limit": watch.limit,
               "wall": round(time.monotonic() - started, 3),
               "cpu": round(time.process_time() - cpu0, 3)}
    worker.log.info("event=collect_done bundle=%s size=%d files=%d left_out=%d partial=%s "
                    "peak_anon_mib=%.1f wall=%.1fs cpu=%.1fs", path, size,
                    len(bundle.collected), len(bundle.left_out), bool(bundle.partial),
                    watch.peak / MiB, summary["wall"], summary["cpu"])
    worker.tick()
    if watch.room_for_upload():
        summary["uploaded"], summary["upload_error"] = _upload(worker, conf, path)
    else:
        summary["uploaded"] = False
        summary["upload_error"] = ("not uploaded: the memory limit (%.1f MiB) leaves no room "
                                   "for the platform client" % (watch.limit / MiB))
        worker.log.warning("event=collect_upload_skipped reason=%r", summary["upload_error"])
    watch.stop()
    summary["peak_anon"] = max(watch.peak, watch.check_peak())   # the upload included
    _write_summary(os.path.join(folder, SUMMARY), summary)
    worker.status("bundle %s, %d bytes%s%s" % (path, size,
                                               ", PARTIAL" if bundle.partial else "",
                                               ", uploaded" if summary["uploaded"] else ""))
    return 0


def _ticking(worker, watch: Watch):
    """The bundle's per-line question "stop?", which also tells the supervisor the loop turns
    (a 30 MiB file at 5 % of a CPU takes many heartbeats)."""
    last = [0.0]

    def should_stop():
        now = time.monotonic()
        if now - last[0] >= 0.05:
            last[0] = now
            worker.tick()
        return watch.over
    return should_stop


def _in_thread(worker, fn, *args):
    """Run fn (an import, an HTTP request) in a thread while the main loop keeps ticking:
    heartbeats go on, and the supervisor still sees a job that hangs for good."""
    box = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # noqa: B902 - re-raised in the main thread
            box["error"] = e
    thread = threading.Thread(target=run, name="logcollector-io", daemon=True)
    thread.start()
    while thread.is_alive():
        worker.tick()
        thread.join(0.05)
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _fill(worker, bundle: Bundle, watch: Watch) -> None:
    result, _ = worker.call("logs.manifest", {})
    files = result["files"]
    for item in result["skipped"]:
        bundle.skip(item["name"], item["why"])
    if result["dropped"]:
        bundle.skip("(%d more files)" % result["dropped"], "over the manifest's entry cap")
    total = len(files)
    last = 0.0
    try:
        for index, item in enumerate(files):
            worker.tick()
            if watch.check():
                bundle.partial = watch.over
                raise Stopped(watch.over)
            if time.monotonic() - last >= PROGRESS_EVERY:
                last = time.monotonic()
                worker.log.info("event=collect_progress done=%d of=%d bytes=%d", index, total,
                                bundle.used)
            if bundle.room() <= 0:
                bundle.skip(item["name"], "the bundle reached its 150 MiB total")
                continue
            try:
                opened, fds = worker.call("logs.open", {"index": index})
            except IpcError as e:
                bundle.skip(item["name"], e.message[:200])
                continue
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                bundle.skip(item["name"], "no descriptor came")
                continue
            bundle.add_fd(opened["name"], fds[0], opened["size"])
        worker.tick()
        try:
            _, fds = worker.call("logs.journal", {}, timeout=150)
        except IpcError as e:
            bundle.skip(JOURNAL_NAME, e.message[:200])
        else:
            if len(fds) == 1:
                bundle.add_fd(JOURNAL_NAME, fds[0], os.fstat(fds[0]).st_size)
        worker.log.info("event=collect_progress done=%d of=%d bytes=%d", total, total,
                        bundle.used)
    except Stopped as e:
        bundle.partial = str(e)
        worker.log.warning("event=collect_partial reason=%r", str(e))


def _upload(worker, conf, path: str):
    """PUT /vmAgentLog, streamed from the file; each attempt opens it afresh."""
    _in_thread(worker, importlib.import_module, "workers.platform")
    from workers.platform import PlatformClient
    from workers.platform.errors import PlatformError
    client = PlatformClient.for_worker(worker, conf)
    last = "no attempt"
    try:
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                _in_thread(worker, _put, client, path)
                worker.log.info("event=collect_uploaded bytes=%d attempt=%d",
                                os.stat(path).st_size, attempt)
                return True, None
            except (PlatformError, OSError) as e:
                last = str(e)[:300]
                worker.log.warning("event=collect_upload_failed attempt=%d error=%r", attempt,
                                   last)
                deadline = time.monotonic() + min(conf["Protocol.RetryDelay"] * attempt, 10.0)
                while attempt < UPLOAD_ATTEMPTS and time.monotonic() < deadline:
                    worker.tick()
                    worker.wait(min(0.1, worker.heartbeat_interval / 2))
    finally:
        client.close()
    return False, last


def _put(client, path: str) -> None:
    from workers.platform.hostplugin import AGENT_NAME, AGENT_VERSION, VM_AGENT_LOG_TIMEOUT
    goal_state = client.goal_state()
    plugin = client.hostplugin
    headers = plugin.headers({
        "x-ms-vmagentlog-deploymentid": goal_state.deployment_id or "",
        "x-ms-client-name": AGENT_NAME, "x-ms-client-version": AGENT_VERSION,
        "x-ms-client-correlationid": str(uuid.uuid4())})
    with open(path, "rb") as body:
        client.http.request("PUT", plugin.url("/vmAgentLog"), body=body, headers=headers,
                            timeout=VM_AGENT_LOG_TIMEOUT, policy=client.http.policy(attempts=1))


def _write_summary(path: str, summary: dict) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(summary, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


if __name__ == "__main__":
    # Out at once when the run is over: at the slice's 5 % of a CPU the interpreter's teardown
    # can take longer than the supervisor's grace between a closed channel and the exit.
    code = Worker("logcollector").run(collect)
    sys.stderr.flush()
    os._exit(code)
