"""python -m emulator serve|show|ctl|media|gen-cert — see emulator/README.md."""
import argparse
import json
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request

MAX_CONTROL_REPLY = 64 << 20


def _serve(args):
    from emulator import platform, servers
    if bool(args.scenario) == bool(args.replay):
        sys.exit("serve: give exactly one of --scenario FILE or --replay DIR")
    ports = {"wireserver": args.wireserver_port, "hostgaplugin": args.hostgaplugin_port, "imds": args.imds_port}
    if args.scenario:
        scenario, base = platform.load_scenario(args.scenario)
        source = platform.Platform(scenario, base)
        fault_spec = scenario.get("faults")
    else:
        from emulator import replay
        source = replay.Replay(args.replay, ext_conf=args.ext_conf)
        fault_spec = None
    if args.faults:
        with open(args.faults) as f:
            fault_spec = json.load(f)
    emu = servers.Emulator(source, fault_spec, bind=args.bind, ports=ports, advertise=args.advertise)
    announcement = emu.start()
    announcement["pid"] = os.getpid()
    print(json.dumps(announcement, sort_keys=True), flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    emu.stop()


def _request(url, method="GET", body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read(MAX_CONTROL_REPLY).decode())
    except urllib.error.HTTPError as e:
        sys.exit("%s %s: %d %s" % (method, url, e.code, e.read(65536).decode(errors="replace")))


def _show(args):
    state = _request(args.url.rstrip("/") + "/_emulator/state")
    if args.json:
        print(json.dumps(state, indent=1, sort_keys=True))
        return
    vm = state["vm"]
    print("%s  incarnation %s  hostname %s  mode %s" % (vm.get("scenario"), vm["incarnation"], vm.get("hostname"),
                                                      state["emulator"]["mode"]))
    for e in vm.get("extensions", []):
        print("  extension %s %s %s" % (e["name"], e["version"], e["state"]))
    for c in vm.get("certificates", []):
        print("  certificate %s %s%s" % (c.get("name"), c["thumbprint"], " (key)" if c.get("hasPrivateKey") else ""))
    for kind, n in sorted(state["counts"].items()):
        if n["valid"] or n["invalid"]:
            print("  received %-15s valid %d invalid %d" % (kind, n["valid"], n["invalid"]))
    for kind, recs in sorted(state["received"].items()):
        for r in recs[-3:]:
            if r["errors"]:
                print("  invalid %s #%d: %s" % (kind, r["seq"], "; ".join(r["errors"])[:300]))
    latest = state.get("latest_status")
    if latest:
        agg = latest["document"].get("aggregateStatus", {})
        print("  status (%s, %s): agent %s" % (latest["channel"], latest["blob_type"],
                                               agg.get("guestAgentStatus", {}).get("status")))
        for h in agg.get("handlerAggregateStatus", []):
            print("    %s %s: %s" % (h.get("handlerName"), h.get("handlerVersion"), h.get("status")))
    print("  requests: %s" % ", ".join("%s=%d" % kv for kv in sorted(state["requests"]["by_endpoint"].items())))


def _ctl(args):
    base = args.url.rstrip("/") + "/_emulator/"
    if args.action == "add-extension" or args.action == "update-extension":
        with open(args.arg) as f:
            out = _request(base + "extensions", "POST", json.load(f))
    elif args.action in ("enable-extension", "disable-extension", "uninstall-extension"):
        out = _request(base + "extensions/%s/%s" % (args.arg, args.action.split("-")[0]), "POST", {})
    elif args.action == "remove-extension":
        out = _request(base + "extensions/%s/remove" % args.arg, "POST", {})
    elif args.action == "rotate-cert":
        out = _request(base + "certificates/%s/rotate" % args.arg, "POST", {})
    elif args.action == "hostname":
        out = _request(base + "hostname", "POST", {"hostname": args.arg})
    elif args.action == "hibernate-resume":
        out = _request(base + "hibernate-resume", "POST", {})
    elif args.action == "bump":
        out = _request(base + "incarnation", "POST", {})
    elif args.action == "faults":
        with open(args.arg) as f:
            out = _request(base + "faults", "POST", json.load(f))
    elif args.action == "reset":
        out = _request(base + "reset", "POST", {})
    else:
        sys.exit("unknown action")
    print(json.dumps(out, indent=1, sort_keys=True))


def _media(args):
    from emulator import media, platform
    scenario, base = platform.load_scenario(args.scenario)
    result = media.write(scenario, base, args.out, iso=not args.no_iso)
    print(json.dumps(result, sort_keys=True))


def _gen_cert(args):
    from emulator import tenant_certs
    os.makedirs(args.out, exist_ok=True)
    c = tenant_certs.generate(args.name)
    old = os.umask(0o077)
    try:
        with open(os.path.join(args.out, args.name + ".crt"), "w") as f:
            f.write(c.cert_pem())
        with open(os.path.join(args.out, args.name + ".prv"), "w") as f:
            f.write(c.key_pem())
    finally:
        os.umask(old)
    print(json.dumps({"name": args.name, "thumbprint": c.thumbprint}))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m emulator", description="Azure platform emulator for guestagent")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the WireServer, HostGAPlugin and IMDS")
    s.add_argument("--scenario")
    s.add_argument("--replay", help="a recorded goal-state folder to serve instead of a scenario")
    s.add_argument("--ext-conf", help="replay: which ext_conf*.xml of a fixture folder (default ext_conf.xml)")
    s.add_argument("--faults", help="a JSON file of scripted faults (replaces the scenario's)")
    s.add_argument("--bind", default="127.0.0.1")
    s.add_argument("--advertise", help="name HOST with the platform's standard ports in every URL served")
    s.add_argument("--wireserver-port", type=int, default=0)
    s.add_argument("--hostgaplugin-port", type=int, default=0)
    s.add_argument("--imds-port", type=int, default=0)
    s.set_defaults(func=_serve)
    s = sub.add_parser("show", help="print what a running emulator has received")
    s.add_argument("--url", required=True, help="the WireServer URL printed on start")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_show)
    s = sub.add_parser("ctl", help="change the VM at run time (each change bumps the incarnation)")
    s.add_argument("--url", required=True)
    s.add_argument("action", choices=["add-extension", "update-extension", "enable-extension", "disable-extension",
                                      "uninstall-extension", "remove-extension", "rotate-cert", "hostname", "bump",
                                      "hibernate-resume", "faults", "reset"])
    s.add_argument("arg", nargs="?", help="JSON file, extension name, certificate name or hostname")
    s.set_defaults(func=_ctl)
    s = sub.add_parser("media", help="write the provisioning DVD (ovf-env.xml and an ISO 9660 + UDF image)")
    s.add_argument("--scenario", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--no-iso", action="store_true")
    s.set_defaults(func=_media)
    s = sub.add_parser("gen-cert", help="write a new tenant certificate and key for a scenario")
    s.add_argument("--name", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_gen_cert)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
