"""Issue 13, where the idle CPU goes: the CPU one idle goal-state poll costs in the platform
client alone (goal state, vmSettings with its ETag, the status blob PUT to the HostGAPlugin:
the three requests of every 6 s poll), against the emulator on 127.0.0.1.

    /opt/guestagent/bin/python benchmarks/platform_poll_cpu.py [--polls 300]

The client is workers/platform's PlatformClient, in this process; CPU is this process's
(time.process_time, so the emulator's side is not counted). Beside it, the same three
requests through bare http.client, as the floor any Python HTTP costs. Prints one JSON line.
"""

import argparse
import http.client
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from config import load  # noqa: E402
from emulator.confinement import Emulator  # noqa: E402
from workers.platform.client import PlatformClient  # noqa: E402

WIRE_HEADERS = {"x-ms-agent-name": "WALinuxAgent", "x-ms-version": "2012-11-30",
                "Connection": "close"}


def per_call_ms(fn, n: int) -> float:
    for _ in range(20):
        fn()
    started = time.process_time()
    for _ in range(n):
        fn()
    return round((time.process_time() - started) / n * 1000, 3)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--polls", type=int, default=300)
    args = p.parse_args()
    emu = Emulator()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "waagent.conf"), "w") as f:
                for k, v in emu.conf().items():
                    f.write("%s=%s\n" % (k, v))
                f.write("Agent.StateDir=%s\n" % tmp)
            conf = load(os.path.join(tmp, "waagent.conf"), report=False)
            client = PlatformClient(conf)
            config = client.full_goal_state(client.goal_state()).extensions_config
            etag = client.vm_settings(None).etag
            blob = json.dumps({"version": "1.1", "aggregateStatus": {"guestAgentStatus": {
                "status": "Ready", "message": "x" * 300}}}).encode()

            def poll():
                client.goal_state()
                client.vm_settings(etag)
                client.upload_status(blob, config)

            def raw(port, method, path, body=None):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request(method, path, body=body, headers=WIRE_HEADERS)
                conn.getresponse().read()
                conn.close()

            def bare():
                raw(emu.ws, "GET", "/machine/?comp=goalstate")
                raw(emu.hgap, "GET", "/vmSettings")
                raw(emu.ws, "GET", "/machine/?comp=goalstate")

            print(json.dumps({"polls": args.polls,
                              "client_ms_cpu_per_poll": per_call_ms(poll, args.polls),
                              "bare_http_client_ms_cpu_per_3_requests": per_call_ms(bare, args.polls),
                              "load_average": os.getloadavg()}))
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
