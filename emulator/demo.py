"""`make demo`: the whole agent provisions a VM from the emulator's default scenario, in a
confined host (emulator/confinement.py), then prints what the VM owner would check and what
the emulator recorded, and leaves the machine as it was.

    /opt/guestagent/bin/python -m emulator.demo [--scenario FILE] [--keep]

Runs as root (namespaces, the real useradd in a copied /etc). Nothing outside a temporary
folder is written: /etc, /home, /var/lib and /var/log are copies inside the agent's private
mount namespace and the hostname is set in its private UTS namespace.
"""

import argparse
import grp
import os
import signal
import socket
import stat
import sys
import time

from emulator.confinement import DEFAULT_SCENARIO, ConfinedHost, Emulator


def _read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def _entry(path, name):
    for line in _read(path).splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


def _ls(path):
    try:
        st = os.lstat(path)
    except OSError:
        return "%-44s missing" % path
    return "%-44s %s uid %d" % (path, stat.filemode(st.st_mode), st.st_uid)


def show(host: ConfinedHost, emu: Emulator, username: str, took: float) -> bool:
    p = print
    user = _entry(host.path("etc", "passwd"), username)
    shadow = _entry(host.path("etc", "shadow"), username)
    groups = sorted(g[0] for g in (line.split(":") for line in
                                   _read(host.path("etc", "group")).splitlines())
                    if len(g) > 3 and (username in g[3].split(",") or g[0] == username))
    home = host.path("home", username)
    ssh = os.path.join(home, ".ssh")
    p("\n=== What the VM owner checks (inside the agent's namespaces) ===")
    p("hostname            %s   (/etc/hostname: %s)" % (
        host.hostname(), _read(host.path("etc", "hostname")).strip()))
    p("user                %s" % (":".join(user) if user else "MISSING"))
    p("groups              %s" % ", ".join(groups))
    p("password hash       %s" % (shadow[1][:3] + "<salt>$<hash> (crypt SHA-512)"
                                  if shadow and shadow[1].startswith("$6$") else
                                  (shadow[1] if shadow else "MISSING")))
    p("sudoers             %s" % _read(host.path("etc", "sudoers.d", "waagent")).strip())
    for path in (ssh, os.path.join(ssh, "authorized_keys"), os.path.join(ssh, "id_rsa"),
                 os.path.join(ssh, "id_rsa.pub")):
        p("  " + _ls(path).replace(host.root, ""))
    keys = _read(os.path.join(ssh, "authorized_keys")).strip()
    p("authorized_keys     %s...%s" % (keys[:24], keys[-30:]))
    sshd = [line for line in _read(host.path("etc", "ssh", "sshd_config")).splitlines()
            if line.split()[:1] and line.split()[0] in (
                "PasswordAuthentication", "ChallengeResponseAuthentication",
                "ClientAliveInterval")]
    p("sshd_config         %s" % "; ".join(sshd))
    p("marker              %s" % _read(host.lib("provisioned")).strip())
    saved = _read(host.lib("ovf-env.xml"))
    p("saved ovf-env.xml   password %s" % ("redacted (<UserPassword>*</UserPassword>)"
                                          if "<UserPassword>*</UserPassword>" in saved
                                          else "NOT REDACTED"))
    p("\n=== What the emulator recorded ===")
    reports = emu.health()
    for r in reports:
        d = r["document"] or {}
        p("health #%-3d %-9s %-20s %s%s" % (r["seq"], d.get("state"), d.get("substatus") or "",
                                            (d.get("description") or "")[:60],
                                            "" if r["valid"] else "  INVALID: %s" % r["errors"]))
    ready = [r for r in reports if (r["document"] or {}).get("state") == "Ready"]
    by_endpoint = emu.state()["requests"]["by_endpoint"]
    p("requests            %s" % ", ".join("%s=%d" % kv for kv in sorted(by_endpoint.items())))
    p("\n=== The agent ===")
    for line in host.log().splitlines():
        if "event=provisioned " in line or "event=provisioning_done" in line:
            p(line.split(": ", 1)[-1])
    console = _read(host.console).splitlines()
    p("serial console      %d lines echoed until provisioning ended (Logs.ConsoleDevice)"
      % len(console))
    p("guestagentd start -> Ready recorded: %.2f s" % took)
    ok = bool(user) and len(ready) == 1 and bool(keys) and host.hostname() != ""
    p("\nResult: %s (Ready recorded %d time(s))" % ("OK" if ok else "FAILED", len(ready)))
    return ok


def _interrupted(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emulator.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default=DEFAULT_SCENARIO)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: run as root (private namespaces, useradd in a copied /etc)", file=sys.stderr)
        return 2
    import json
    with open(args.scenario) as f:
        username = json.load(f)["vm"]["username"]
    host_name, host_passwd = socket.gethostname(), _read("/etc/passwd")
    print("Starting the emulator (%s) and the whole agent in a confined host..." % args.scenario)
    # A SIGTERM (or Ctrl-C) still runs the finally below: nothing the demo started outlives it.
    signal.signal(signal.SIGTERM, _interrupted)
    emu = Emulator(args.scenario)
    host = None
    ok = False
    try:
        host = ConfinedHost(emu.conf())
        host.write_media(args.scenario)
        print("confined host: %s (DVD stand-in: %s)" % (host.root, host.media))
        host.start()
        t0 = host.exec_time()
        deadline = time.monotonic() + 120
        took = None
        while time.monotonic() < deadline and took is None:
            if any((r["document"] or {}).get("state") == "Ready" for r in emu.health()):
                took = time.time() - t0
            elif "event=provisioning_done" in host.log():
                break
            else:
                time.sleep(0.01)
        host.wait_log("event=provisioning_done", 60)
        ok = show(host, emu, username, took if took is not None else float("nan"))
    except Exception as e:  # noqa: B902 - show what we have, then clean up
        print("demo failed: %s\n%s" % (e, host.all_logs()[-4000:] if host else ""),
              file=sys.stderr)
    finally:
        # A SIGTERM that comes while we clean up must not cut the clean-up short (the agent
        # stopped, the emulator left running): it is noted, and the exit status says it.
        late = []
        signal.signal(signal.SIGTERM, lambda *_: late.append(True))
        if host is not None:
            host.stop()
        emu.stop()
        if host is not None:
            if args.keep:
                print("kept %s" % host.root)
            else:
                host.close()
    same = socket.gethostname() == host_name and _read("/etc/passwd") == host_passwd
    print("The machine is as it was: hostname %s, /etc/passwd %s, no /home/%s%s" % (
        socket.gethostname(), "unchanged" if _read("/etc/passwd") == host_passwd else "CHANGED",
        username, "" if not os.path.exists("/home/" + username) else " -- EXISTS!"))
    if late:
        return 128 + signal.SIGTERM
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(main())
