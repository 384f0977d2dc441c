"""VM extensions as root, the platform's contract (issue 13; protocol.md §4; DESIGN.md
principle 2's first reviewed exception).

The broker holds Lib.Dir (/var/lib/waagent, root 0700) and everything under it:
- a package reaches it only as a descriptor the worker passes; the broker extracts it itself
  (`_extract`: per-entry path checks, no symlink or device, caps on entries, bytes and
  compression ratio) into a fresh folder, then renames it to `<Name>-<Version>`;
- a command is never a string from the worker: (name, version, operation, seq) names the
  folder, whose HandlerManifest.json the broker reads itself (O_NOFOLLOW, capped);
- every run is recorded in the folder's config/GuestAgentRuns.json before it starts, so a
  worker that is killed and restarted cannot make a command run twice for one sequence
  number; the record of a folder the broker did not make itself is missing, and such a
  folder is not "installed" for any verb;
- commands run in a cgroup of their own (cgroup v2, or v1's freezer, under the supervisor's
  `guestagent.<pid>` cgroup of supervisor/trees.py), or under systemd as a transient scope in
  guestagent-extensions.slice; on timeout the whole cgroup is killed, double-forked
  children too; output is kept with a bound (head and tail of each stream).
"""

import ctypes
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from typing import Dict, Optional, Tuple

import launch
from launch import forked
from ipc.verbs import extensions as E
from cgroups import find_hierarchy, kill_cgroup, mounts as cgroup_mounts, own_cgroup, \
    remove_cgroup, write as write_cgroup
from statefiles import unlinked_file
from supervisor.broker import Context, Privileged
from supervisor.privileged import agent_events
from supervisor.privileged import (SAFE_PATH, atomic_write, ensure_root_dir, fail, lib_dir,
                                   read_capped, which)
from supervisor.privileged.state import DISABLE_AGENT

log = logging.getLogger("guestagent.broker.extensions")

WORKERS = frozenset(("extensions",))
RUNS_FILE = "GuestAgentRuns.json"
MANIFEST = "HandlerManifest.json"
MAX_MANIFEST_BYTES = 64 * 1024
MAX_STATUS_BYTES = 128 * 1024
MAX_RUNS = 32
# An update runs in a folder twice at most: upgrading into it, then downgrading out of it.
ONCE_PER_FOLDER = ("install", "uninstall")
COMMAND_KEYS = {"install": "installCommand", "enable": "enableCommand",
                "disable": "disableCommand", "update": "updateCommand",
                "uninstall": "uninstallCommand"}
TIMEOUT_KEYS = {"install": "Extensions.InstallTimeout", "enable": "Extensions.EnableTimeout",
                "disable": "Extensions.DisableTimeout", "update": "Extensions.UpdateTimeout",
                "uninstall": "Extensions.UninstallTimeout"}
SUPPORTED_FEATURES = '[{"Key": "ExtensionTelemetryPipeline", "Value": "1.0"}]'
# Output kept per stream: its first and last bytes (a flood keeps both ends, never all).
HEAD = 2048
TAIL = 2048
SLICE = "guestagent-extensions.slice"
CPU_QUOTA = "\x00cpuQuotaPercentage"   # in _manifest()'s dict; no manifest key has a NUL
CFS_PERIOD = 100000
FOLDER_RE = re.compile(r"(?!.*\.\.)([A-Za-z0-9_][A-Za-z0-9_.]*)-([0-9]{1,9}(?:\.[0-9]{1,9}){0,5})")

_locks: Dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()
_running = set()   # folders with a command running in this supervisor


def _lock_of(path: str) -> threading.Lock:
    with _locks_lock:
        return _locks.setdefault(path, threading.Lock())


# ==== the folders ==========================================================================
def _folder(conf, name: str, version: str) -> str:
    return os.path.join(conf["Lib.Dir"], "%s-%s" % (name, version))


def _root_dir(path: str) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0


def _runs(folder: str) -> Optional[list]:
    """The run records of a folder the broker made (None: not one of ours)."""
    try:
        data = read_capped(os.path.join(folder, "config", RUNS_FILE), 64 * 1024)
    except Exception:  # noqa: B902 - a symlink, a FIFO, too large: not ours
        return None
    if data is None:
        return None
    try:
        runs = json.loads(data)
        return runs if isinstance(runs, list) else None
    except ValueError:
        return None


def _save_runs(folder: str, runs: list) -> None:
    atomic_write(os.path.join(folder, "config", RUNS_FILE),
                 json.dumps(runs[-MAX_RUNS:]).encode(), 0o600)


def _installed(conf, name: str, version: str) -> Tuple[str, list]:
    folder = _folder(conf, name, version)
    if not _root_dir(folder):
        raise fail("%s %s is not installed" % (name, version))
    runs = _runs(folder)
    if runs is None:
        raise fail("%s was not installed by the broker: refused" % os.path.basename(folder))
    return folder, runs


def _manifest(folder: str) -> dict:
    data = read_capped(os.path.join(folder, MANIFEST), MAX_MANIFEST_BYTES)
    if data is None:
        raise fail("no %s in %s" % (MANIFEST, os.path.basename(folder)))
    manifest = _parse_manifest(data)
    return dict(manifest, **{CPU_QUOTA: _cpu_quota(data)})


def _cpu_quota(data: bytes) -> Optional[int]:
    """The manifest's resourceLimits.cpuQuotaPercentage (§4.4, §4.12: percent of one CPU, as
    systemd's CPUQuota=), or None: no quota ("infinity", as waagent leaves it unset). A value
    that is not a whole number from 1 to 100 x the CPUs is no quota, and logged."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
        if isinstance(doc, list):
            doc = doc[0]
        limits = doc.get("resourceLimits")
    except (ValueError, IndexError, AttributeError, UnicodeDecodeError):
        return None
    if not isinstance(limits, dict) or limits.get("cpuQuotaPercentage") is None:
        return None
    value = limits["cpuQuotaPercentage"]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 1 <= value <= 100 * (os.cpu_count() or 1):
        log.warning("event=extension_cpu_quota_ignored value=%r reason='not a whole percent "
                    "from 1 to 100 x the CPUs'", str(value)[:32])
        return None
    return value


def _parse_manifest(data: bytes) -> dict:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
        if isinstance(doc, list):
            doc = doc[0]
        manifest = doc["handlerManifest"]
        if not isinstance(manifest, dict):
            raise TypeError
    except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError):
        raise fail("%s is malformed (code 1003)" % MANIFEST) from None
    return manifest


# ==== extensions.state ======================================================================
def state(ctx: Context, args: dict) -> dict:
    folder = lib_dir(ctx.conf)
    handlers = []
    for entry in sorted(os.listdir(folder)):
        m = FOLDER_RE.fullmatch(entry)
        path = os.path.join(folder, entry)
        if not m or not _root_dir(path):
            continue
        runs = _runs(path)
        if runs is None:
            continue
        out = []
        for r in runs[-MAX_RUNS:]:
            try:
                rec = {"operation": r["operation"], "seq": int(r["seq"]),
                       "extension": r.get("extension"), "state": r["state"],
                       "exit_code": r.get("exit_code"), "reason": str(r.get("reason", ""))[:64]}
            except (KeyError, TypeError, ValueError):
                continue
            if rec["state"] == "running" and path not in _running:
                # A previous supervisor died while it ran: it is not running any more.
                rec.update(state="done", reason="interrupted")
            out.append(rec)
        handlers.append({"name": m.group(1), "version": m.group(2), "runs": out})
    return {"disable_agent": os.path.lexists(os.path.join(folder, DISABLE_AGENT)),
            "handlers": handlers[:256]}


# ==== extensions.install ====================================================================
def _entry_path(name: str) -> Tuple[str, ...]:
    """The parts of a zip entry's path, or FAILED when it could leave the folder."""
    if "\x00" in name or "\\" in name or name.startswith("/") or len(name) > 1024:
        raise fail("package entry %r has an unsafe path (zip-slip): refused" % name[:80])
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if not parts or any(p == ".." for p in parts):
        raise fail("package entry %r has an unsafe path (zip-slip): refused" % name[:80])
    return parts


def _extract(conf, zf: "zipfile.ZipFile", dest: str) -> Tuple[int, int]:
    import zipfile
    # What zipfile raises for an entry it cannot read: a corrupt archive or entry, a zip64
    # size, a compression method it does not implement (it raises NotImplementedError), a
    # truncated stream, an encrypted entry (RuntimeError). Each is a refused package, never a
    # crash.
    unreadable = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
                  RuntimeError)
    max_entries = conf["Extensions.MaxPackageEntries"]
    max_bytes = conf["Extensions.MaxExtractedBytes"]
    max_ratio = conf["Extensions.MaxCompressionRatio"]
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise fail("package has %d entries, more than %d (zip bomb?): refused"
                   % (len(infos), max_entries))
    seen = set()
    plan = []
    for info in infos:
        parts = _entry_path(info.filename)
        key = "/".join(parts).lower()
        if key in seen:
            raise fail("package entry %r appears twice: refused" % info.filename[:80])
        seen.add(key)
        kind = (info.external_attr >> 16) & 0o170000
        if info.is_dir():
            plan.append((parts, None))
            continue
        if kind not in (0, stat.S_IFREG):
            raise fail("package entry %r is a %s, not a file: refused" % (
                info.filename[:80], "symlink" if kind == stat.S_IFLNK else "special file"))
        plan.append((parts, info))
    total = 0
    files = 0
    for parts, info in plan:
        path = dest
        for i, part in enumerate(parts if info is None else parts[:-1]):
            path = os.path.join(path, part)
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise fail("package entry %r collides with a file" % "/".join(parts)[:80])
        if info is None:
            continue
        target = os.path.join(dest, *parts)
        mode = ((info.external_attr >> 16) & 0o755) or 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode | 0o700)
        written = 0
        try:
            with zf.open(info) as src:
                while True:
                    chunk = src.read(65536)
                    if not chunk:
                        break
                    written += len(chunk)
                    total += len(chunk)
                    if total > max_bytes:
                        raise fail("package expands to more than %d bytes (zip bomb?): refused"
                                   % max_bytes)
                    if written > 1024 * 1024 and written > max_ratio * max(info.compress_size, 1):
                        raise fail("package entry %r expands more than %dx (zip bomb?): refused"
                                   % (info.filename[:80], max_ratio))
                    os.write(fd, chunk)
            os.fchmod(fd, mode | 0o700)   # every file u+rwx, as waagent chmods them
        except unreadable as e:
            raise fail("package entry %r is unreadable: %s" % (info.filename[:80], e)) from None
        finally:
            os.close(fd)
        files += 1
    return files, total


def _extract_in_fork(conf, fd: int, dest: str) -> Tuple[int, int]:
    """_extract in a short-lived fork of the supervisor (launch/forked.py): zipfile and what it
    imports (pathlib, importlib.util: ~0.7 MiB) would otherwise stay in the resident supervisor
    for a call that comes once per extension version (issue 17). The fork is root, as this
    thread is; it writes only under `dest` and answers (files, bytes) or the refusal."""
    def work() -> bytes:
        import zipfile
        # Our own descriptor on the worker's file, read from its start.
        with os.fdopen(os.dup(fd), "rb") as f:
            f.seek(0)
            try:
                with zipfile.ZipFile(f) as zf:
                    return json.dumps(_extract(conf, zf, dest)).encode()
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
                raise fail("the package is not a valid zip: %s" % e) from None
            except OSError as e:   # e.g. a file entry where a folder entry was
                raise fail("the package could not be extracted: %s" % (e.strerror or e)) from None
    out = forked.run(work, lambda message, code: fail(message),
                     time.monotonic() + E.INSTALL.timeout - 10, 64)
    files, total = json.loads(out)
    return int(files), int(total)


def _place_manifest(dest: str) -> None:
    """HandlerManifest.json at the folder's root (copied there from the shallowest place a
    package has it, as waagent does), and valid."""
    top = os.path.join(dest, MANIFEST)
    if not os.path.lexists(top):
        found = None
        for root, dirs, files in os.walk(dest):
            dirs.sort()
            if MANIFEST in files:
                cand = os.path.join(root, MANIFEST)
                if found is None or cand.count("/") < found.count("/"):
                    found = cand
        if found is None:
            raise fail("the package has no %s (code 1002): refused" % MANIFEST)
        shutil.copyfile(found, top, follow_symlinks=False)
    _manifest(dest)


def install(ctx: Context, args: dict) -> dict:
    name, version = args["name"], args["version"]
    if len(ctx.fds) != 1:
        raise fail("extensions.install needs the package as one descriptor")
    fd = ctx.fds[0]
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise fail("the package descriptor is not a regular file: refused")
    if st.st_size > ctx.conf["Extensions.MaxPackageBytes"]:
        raise fail("the package is %d bytes, more than %d: refused"
                   % (st.st_size, ctx.conf["Extensions.MaxPackageBytes"]))
    lib = lib_dir(ctx.conf)
    final = _folder(ctx.conf, name, version)
    with _lock_of(final):
        if os.path.lexists(final):
            if _root_dir(final) and _runs(final) is not None:
                return {"existed": True, "files": 0, "bytes": 0}
            raise fail("%s exists and is not one the broker made: refused"
                       % os.path.basename(final))
        tmp = os.path.join(lib, ".extract.%s-%s.%s" % (name, version, os.urandom(4).hex()))
        os.mkdir(tmp, 0o700)
        try:
            files, total = _extract_in_fork(ctx.conf, fd, tmp)
            _place_manifest(tmp)
            for sub in ("config", "status"):
                path = os.path.join(tmp, sub)
                if os.path.lexists(path) and not stat.S_ISDIR(os.lstat(path).st_mode):
                    os.unlink(path)
                os.makedirs(path, 0o700, exist_ok=True)
                os.chmod(path, 0o700)
            _save_runs(tmp, [])
            os.chmod(tmp, 0o755)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("event=extension_installed name=%s version=%s files=%d bytes=%d",
             name, version, files, total)
    return {"existed": False, "files": files, "bytes": total}


# ==== extensions.configure ==================================================================
def _log_dir(conf, name: str) -> str:
    return os.path.join(conf["Extension.LogDir"], name)


def configure(ctx: Context, args: dict) -> dict:
    name, version, seq, ext = args["name"], args["version"], args["seq"], args["extension"]
    folder, _ = _installed(ctx.conf, name, version)
    try:
        doc = json.loads(args["settings"])
        if not isinstance(doc, dict) or not isinstance(doc.get("runtimeSettings"), list):
            raise ValueError
    except ValueError:
        raise fail("the settings are not a runtimeSettings document") from None
    logs = _log_dir(ctx.conf, name)
    os.makedirs(ctx.conf["Extension.LogDir"], 0o755, exist_ok=True)
    ensure_root_dir(logs, 0o755)
    ensure_root_dir(os.path.join(logs, "events"), 0o700)
    for sub in ("config", "status"):
        ensure_root_dir(os.path.join(folder, sub), 0o700)
    env = [{"name": name, "version": 1.0, "handlerEnvironment": {
        "logFolder": logs, "configFolder": os.path.join(folder, "config"),
        "statusFolder": os.path.join(folder, "status"),
        "heartbeatFile": os.path.join(folder, "heartbeat.log"),
        "eventsFolder": os.path.join(logs, "events"),
        "eventsFolder_preview": os.path.join(logs, "events")}}]
    atomic_write(os.path.join(folder, "HandlerEnvironment.json"), json.dumps(env).encode(), 0o644)
    base = "%d.settings" % seq if ext is None else "%s.%d.settings" % (ext, seq)
    path = os.path.join(folder, "config", base)
    atomic_write(path, json.dumps(doc).encode(), 0o600)
    return {"settings_file": path}


# ==== extensions.run ========================================================================
def _cgroup_base() -> Optional[str]:
    """The supervisor's own cgroup folder (supervisor/trees.py makes it), where each command
    gets a cgroup; None where there is none."""
    hierarchy = find_hierarchy()
    if hierarchy is None:
        return None
    own = own_cgroup(hierarchy=hierarchy)
    if own is None:
        return None
    base = os.path.join(hierarchy + own.rstrip("/"), "guestagent.%d" % os.getpid())
    return base if os.path.isdir(base) else None


def _systemd() -> bool:
    return os.path.isdir("/run/systemd/system") and which("systemd-run") is not None


def _kept(f) -> str:
    """The head and tail of what a command wrote to one of its output files (a flood keeps
    both ends, never all of it in memory)."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    head = f.read(min(size, HEAD))
    tail = b""
    if size > HEAD:
        f.seek(max(HEAD, size - TAIL))
        tail = f.read(TAIL)
    skipped = size - len(head) - len(tail)
    middle = "\n... [%d bytes not kept] ...\n" % skipped if skipped > 0 else ""
    return head.decode("utf-8", "replace") + middle + tail.decode("utf-8", "replace")


def _supervise(proc, timeout: float, cancel: threading.Event):
    """Wait for the command's main process (not for a daemon it leaves behind) until the
    deadline or cancellation. Returns why it was cut short (None, "timeout", "cancelled")."""
    deadline = time.monotonic() + timeout
    while True:
        if cancel.is_set():
            return "cancelled"
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        try:
            proc.wait(timeout=min(left, 0.1))
            return None
        except subprocess.TimeoutExpired:
            continue


def _environment(conf, folder: str, version: str, args: dict) -> dict:
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": "/root",
           "AZURE_GUEST_AGENT_EXTENSION_PATH": folder,
           "AZURE_GUEST_AGENT_EXTENSION_VERSION": version,
           "ConfigSequenceNumber": str(args["seq"]),
           "AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES": SUPPORTED_FEATURES}
    if args.get("wire_address"):
        env["AZURE_GUEST_AGENT_WIRE_PROTOCOL_ADDRESS"] = args["wire_address"]
    if args["extension"] is not None:
        env["ConfigExtensionName"] = args["extension"]
    op = args["operation"]
    if op in ("install", "enable"):
        code = args.get("uninstall_exit_code")
        env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] = "NOT_RUN" if code is None else str(code)
    if op == "update":
        env["VERSION"] = version
        if args.get("updating_from_version"):
            env["AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"] = args["updating_from_version"]
        code = args.get("disable_exit_code")
        env["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] = "NOT_RUN" if code is None else str(code)
    return env


def _command_log(conf, name: str, line: str) -> None:
    """One line in Extension.LogDir/<name>/CommandExecution.log (cut at 10 MiB)."""
    path = os.path.join(_log_dir(conf, name), "CommandExecution.log")
    try:
        ensure_root_dir(_log_dir(conf, name), 0o755)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW |
                     os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                if os.fstat(fd).st_size > 10 * 1024 * 1024:
                    os.ftruncate(fd, 0)
                os.write(fd, (time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + line +
                              "\n").encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError as e:
        log.warning("event=command_log_failed name=%s error=%r", name, e.strerror)


def _check_order(runs: list, op: str, seq: int, extension: Optional[str]) -> None:
    if op in ONCE_PER_FOLDER and any(r.get("operation") == op for r in runs):
        raise fail("%s ran already in this folder: refused" % op)
    # A multi-config handler's extensions each have their own sequence numbers.
    mine = [r for r in runs if r.get("extension") == extension]
    if mine and mine[-1].get("operation") == op and mine[-1].get("seq") == seq:
        raise fail("%s with sequence number %d ran already: refused" % (op, seq))


def run(ctx: Context, args: dict) -> dict:
    name, version, op, seq = args["name"], args["version"], args["operation"], args["seq"]
    folder, _ = _installed(ctx.conf, name, version)
    lock = _lock_of(folder)
    if not lock.acquire(blocking=False):
        raise fail("a command of %s %s is running: refused" % (name, version))
    try:
        runs = _runs(folder) or []
        _check_order(runs, op, seq, args["extension"])
        manifest = _manifest(folder)
        command = manifest.get(COMMAND_KEYS[op])
        if not isinstance(command, str) or not command.strip():
            raise fail("%s has no %s" % (MANIFEST, COMMAND_KEYS[op]))
        if len(command) > 1024 or "\x00" in command:
            raise fail("%s of %s is unusable" % (COMMAND_KEYS[op], MANIFEST))
        command = os.path.join(folder, command.strip().lstrip("/"))
        record = {"operation": op, "seq": seq, "extension": args["extension"],
                  "state": "running", "exit_code": None, "reason": "", "started": time.time()}
        runs.append(record)
        _save_runs(folder, runs)   # before it runs: no restart makes it run twice
        _running.add(folder)
        result = {"exit_code": None, "reason": "error"}
        try:
            result = _execute(ctx, folder, name, version, op, command, args,
                              manifest[CPU_QUOTA])
        finally:
            _running.discard(folder)
            record.update(state="done", exit_code=result["exit_code"],
                          reason=result["reason"][:64])
            _save_runs(folder, runs)
        return result
    finally:
        lock.release()


def _v1_cpu_cgroup(leaf: str, quota: int) -> Optional[str]:
    """cgroup v1 without systemd: the command's cgroup of the cpu controller, beside its
    freezer one (`<cpu mount><our cpu cgroup>/guestagent.<pid>/<leaf>`), its CFS quota set;
    None where there is no v1 cpu controller (or it cannot be written: logged)."""
    try:
        v1 = cgroup_mounts()[1]
    except OSError:
        return None
    mount = v1.get("cpu")
    own = own_cgroup(hierarchy=mount, controller="cpu") if mount else None
    if mount is None or own is None:
        return None
    path = os.path.join(mount, own.lstrip("/"), "guestagent.%d" % os.getpid(), leaf)
    try:
        os.makedirs(path, 0o755, exist_ok=True)
        write_cgroup(os.path.join(path, "cpu.cfs_period_us"), str(CFS_PERIOD))
        write_cgroup(os.path.join(path, "cpu.cfs_quota_us"), str(quota * CFS_PERIOD // 100))
    except OSError as e:
        log.warning("event=extension_cpu_quota_failed path=%s error=%r", path, e.strerror)
        try:
            os.rmdir(path)
        except OSError:
            pass
        return None
    return path


def _v2_cpu_quota(cgroup: str, quota: int) -> bool:
    """cgroup v2 without systemd: cpu.max on the command's own cgroup, the cpu controller
    enabled down to it (our cgroup's parent, then ours)."""
    base = os.path.dirname(cgroup)
    for parent in (os.path.dirname(base), base):
        try:
            write_cgroup(os.path.join(parent, "cgroup.subtree_control"), "+cpu")
        except OSError:
            pass   # on already, or not ours to change: cpu.max below says
    try:
        write_cgroup(os.path.join(cgroup, "cpu.max"),
                     "%d %d" % (quota * CFS_PERIOD // 100, CFS_PERIOD))
        return True
    except OSError as e:
        log.warning("event=extension_cpu_quota_failed path=%s error=%r", cgroup, e.strerror)
        return False


def _execute(ctx: Context, folder: str, name: str, version: str, op: str, command: str,
             args: dict, quota: Optional[int] = None) -> dict:
    timeout = float(ctx.conf[TIMEOUT_KEYS[op]])
    env = _environment(ctx.conf, folder, version, args)
    cgroup = cpu_cgroup = unit = None
    applied = "none"
    if _systemd():
        unit = "guestagent-ext-%s-%s-%s" % (re.sub(r"[^A-Za-z0-9_]", "_", name)[:80], op,
                                             os.urandom(4).hex())
        argv = [which("systemd-run"), "--quiet", "--scope", "--unit=" + unit,
                "--slice=" + SLICE, "--property=CPUAccounting=yes"]
        if quota is not None:
            # The manifest's resourceLimits (§4.12): the scope's CPUQuota, as waagent sets
            # its per-extension slice's.
            argv.append("--property=CPUQuota=%d%%" % quota)
            applied = "CPUQuota=%d%%" % quota
        argv += ["--", "/bin/sh", "-c", command]
    else:
        base = _cgroup_base()
        leaf = "ext.%s.%s.%s" % (name, op, os.urandom(4).hex())
        if base is not None:
            cgroup = os.path.join(base, leaf)
            try:
                os.mkdir(cgroup, 0o755)
            except OSError as e:
                log.warning("event=extension_cgroup_failed path=%s error=%r", cgroup, e.strerror)
                cgroup = None
        if quota is not None:
            if cgroup is not None and os.path.exists(os.path.join(cgroup, "cpu.cfs_quota_us")):
                cpu_cgroup = cgroup   # v1 with cpu co-mounted with the freezer
            else:
                cpu_cgroup = _v1_cpu_cgroup(leaf, quota)
            if cpu_cgroup is cgroup and cgroup is not None:
                write_cgroup(os.path.join(cgroup, "cpu.cfs_period_us"), str(CFS_PERIOD))
                write_cgroup(os.path.join(cgroup, "cpu.cfs_quota_us"),
                             str(quota * CFS_PERIOD // 100))
                cpu_cgroup = None
                applied = "cpu.cfs_quota_us=%d" % (quota * CFS_PERIOD // 100)
            elif cpu_cgroup is not None:
                applied = "cpu.cfs_quota_us=%d" % (quota * CFS_PERIOD // 100)
            elif cgroup is not None and not os.path.exists(os.path.join(cgroup, "tasks")) and \
                    _v2_cpu_quota(cgroup, quota):
                applied = "cpu.max=%d" % (quota * CFS_PERIOD // 100)
            else:
                log.warning("event=extension_cpu_quota_not_applied name=%s quota=%d%% "
                            "reason='no cgroup with the cpu controller we may write'",
                            name, quota)
        joined = [os.path.join(c, "cgroup.procs") for c in (cgroup, cpu_cgroup) if c]
        if joined:
            # The shell enters the cgroups before it execs the command: nothing it starts can
            # be outside them.
            argv = ["/bin/sh", "-c",
                    'c="$1"; shift; for p; do echo $$ > "$p" || exit 125; done; '
                    'exec /bin/sh -c "$c"', "guestagent-extension", command] + joined
        else:
            argv = ["/bin/sh", "-c", command]
    _command_log(ctx.conf, name, "start %s %s seq=%d: %s" % (op, version, args["seq"], command))
    log.info("event=extension_command name=%s version=%s operation=%s seq=%d cgroup=%s unit=%s "
             "cpu_quota=%s", name, version, op, args["seq"], cgroup or "none", unit or "none",
             applied)
    started = time.monotonic()
    # Output to unlinked files in the handler folder, as waagent's temporary files: a daemon
    # the command leaves behind may keep writing there (a pipe would kill it with SIGPIPE).
    out = open(unlinked_file(folder), "w+b")
    err = open(unlinked_file(folder), "w+b")
    try:
        try:
            with launch.kernel_huge_pages():   # the extension's, not our memory policy
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=err, env=env, cwd=folder, close_fds=True,
                                        start_new_session=True)
        except OSError as e:
            for c in (cgroup, cpu_cgroup):
                if c:
                    remove_cgroup(c)
            raise fail("%s could not start: %s" % (op, e.strerror)) from None
        why = _supervise(proc, timeout, ctx.cancel)
        if why is not None:
            for c in (cgroup, cpu_cgroup):
                if c is not None:
                    kill_cgroup(c)
            if unit is not None:
                subprocess.run([which("systemctl") or "systemctl", "kill", "--signal=SIGKILL",
                                unit + ".scope"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=30)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        output = "[stdout]\n%s\n\n[stderr]\n%s" % (_kept(out), _kept(err))
    finally:
        out.close()
        err.close()
    seconds = time.monotonic() - started
    for c in (cgroup, cpu_cgroup):
        if c is not None and why is not None:
            remove_cgroup(c)
        elif c is not None:
            try:
                os.rmdir(c)   # empty unless the command left a daemon (it stays held there)
            except OSError:
                pass
    code = None if why else proc.returncode
    reason = why or ("exited" if code is not None and code >= 0 else "signal")
    if code is not None and code < 0:
        code = None
    _command_log(ctx.conf, name, "end %s %s seq=%d: %s%s after %.1fs" % (
        op, version, args["seq"], reason, "" if code is None else " %d" % code, seconds))
    log.info("event=extension_command_end name=%s operation=%s reason=%s exit_code=%s "
             "seconds=%.2f", name, op, reason, code, seconds)
    agent_events.operation(ctx.conf, name, version, op.capitalize(), code == 0,
                           "%s %s%s after %.1fs" % (op, reason, "" if code is None else
                                                    " %d" % code, seconds), int(seconds * 1000))
    return {"exit_code": code, "reason": reason + ("(%.0fs)" % timeout if why == "timeout"
                                                   else ""),
            "output": output[:16 * 1024], "seconds": round(seconds, 3),
            "command": command[:1024]}


# ==== extensions.read_status ================================================================
# The status folder's changes, for the worker's own inotify instance (workers/extensions/
# status_watch.py): a file written, closed, moved in or out, removed; the folder itself gone.
_IN_STATUS_CHANGES = (0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800)
_IN_ONLYDIR, _IN_DONT_FOLLOW = 0x01000000, 0x02000000
_inotify_add_watch = ctypes.CDLL(None, use_errno=True).inotify_add_watch
_inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def _watch_status(fds, folder: str) -> bool:
    """Add a watch on <folder>/status to the inotify instance the worker sent, before the
    read, so that any later write is an event the worker sees. The folder is the broker's
    (an installed handler's), never a path from the worker; a symlink or a missing folder is
    not watched. The watch counts against the instance's owner, the worker, not root: a
    worker cannot spend root's inotify quota this way. Any other descriptor (not an inotify
    instance) fails with EINVAL: nothing is watched, nothing waits."""
    if not fds:   # (at most one: the verb's max_fds)
        return False
    path = os.path.join(folder, "status").encode()
    return _inotify_add_watch(fds[0], path, _IN_STATUS_CHANGES | _IN_ONLYDIR
                              | _IN_DONT_FOLLOW) >= 0


def read_status(ctx: Context, args: dict) -> dict:
    name, version, seq, ext = args["name"], args["version"], args["seq"], args["extension"]
    folder, _ = _installed(ctx.conf, name, version)
    base = "%d.status" % seq if ext is None else "%s.%d.status" % (ext, seq)
    path = os.path.join(folder, "status", base)
    out = {"status": None, "status_size": -1, "status_error": None,
           "heartbeat": None, "heartbeat_age": None,
           "watched": _watch_status(ctx.fds, folder)}
    try:
        data = read_capped(path, MAX_STATUS_BYTES)
        if data is not None:
            out["status"] = data.decode("utf-8", "replace")
            out["status_size"] = len(data)
    except Exception as e:  # noqa: B902 - too large, a FIFO, a symlink: reported, not read
        out["status_error"] = str(getattr(e, "message", e))[:256]
        try:
            out["status_size"] = os.lstat(path).st_size
        except OSError:
            pass
    hb = os.path.join(folder, "heartbeat.log")
    try:
        data = read_capped(hb, MAX_STATUS_BYTES)
        if data is not None:
            out["heartbeat"] = data.decode("utf-8", "replace")
            out["heartbeat_age"] = round(time.time() - os.lstat(hb).st_mtime, 1)
    except Exception:  # noqa: B902 - an unusable heartbeat is no heartbeat
        pass
    return out


# ==== extensions.remove =====================================================================
def remove(ctx: Context, args: dict) -> dict:
    folder = _folder(ctx.conf, args["name"], args["version"])
    with _lock_of(folder):
        if not os.path.lexists(folder):
            return {"removed": False}
        _installed(ctx.conf, args["name"], args["version"])
        shutil.rmtree(folder)   # descriptor-based on Linux: never follows a link inside
    log.info("event=extension_removed name=%s version=%s", args["name"], args["version"])
    return {"removed": True}


VERBS = (
    Privileged(E.STATE, state, WORKERS),
    Privileged(E.INSTALL, install, WORKERS, slow=True),
    Privileged(E.CONFIGURE, configure, WORKERS),
    Privileged(E.RUN, run, WORKERS, slow=True),
    Privileged(E.READ_STATUS, read_status, WORKERS, routine=True),
    Privileged(E.REMOVE, remove, WORKERS, slow=True),
)
