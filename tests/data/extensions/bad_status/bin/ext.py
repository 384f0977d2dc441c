#!/usr/bin/python3
"""A Python extension in the real contract: it reads HandlerEnvironment.json and its settings
file, then writes the status file its publicSettings ask for: "malformed" (not JSON),
"huge" (1 MiB of valid JSON) or "invalid" (a status value outside the allowed set)."""
import json
import os
import sys

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(here, "HandlerEnvironment.json")) as f:
    env = json.load(f)[0]["handlerEnvironment"]
op = sys.argv[1] if len(sys.argv) > 1 else "unknown"
seq = os.environ.get("ConfigSequenceNumber", "0")
with open(os.path.join(env["logFolder"], "ops.log"), "a") as f:
    f.write("%s seq=%s\n" % (op, seq))
if op == "enable":
    with open(os.path.join(env["configFolder"], seq + ".settings")) as f:
        settings = json.load(f)["runtimeSettings"][0]["handlerSettings"]
    mode = (settings.get("publicSettings") or {}).get("mode", "malformed")
    path = os.path.join(env["statusFolder"], seq + ".status")
    if mode == "malformed":
        text = '[{"version": "1.0", "status": {"status": '
    elif mode == "huge":
        text = json.dumps([{"version": "1.0", "timestampUTC": "2026-01-01T00:00:00Z",
                            "status": {"name": "BadStatus", "operation": "Enable",
                                       "status": "success", "code": 0,
                                       "formattedMessage": {"lang": "en-US",
                                                            "message": "x" * (1 << 20)}}}])
    else:
        text = json.dumps([{"version": "1.0", "status": {"status": "fabulous", "code": 0}}])
    with open(path, "w") as f:
        f.write(text)
sys.exit(0)
