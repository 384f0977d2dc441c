"""Goal-state GETs per second against the emulator (issue 4): 8 concurrent clients in other
processes, with `Connection: close` (what the agent sends) and with HTTP/1.1 keep-alive.

    /usr/bin/python3 benchmarks/emulator_goalstate.py [--seconds 5] [--clients 8]

Starts `python -m emulator serve --scenario emulator/scenarios/default.json`, then for each mode
runs the clients for the given time and prints one JSON line per mode. Every reply is checked
(status 200 and the Incarnation element), so an error counts against the figure, not for it.
"""
import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUEST = ("GET /machine/?comp=goalstate HTTP/1.1\r\nHost: {host}\r\nx-ms-agent-name: WALinuxAgent\r\n"
           "x-ms-version: 2012-11-30\r\nUser-Agent: WALinuxAgent/2.15.0.1\r\n{conn}\r\n")


def _read_response(sock, buf):
    """One HTTP response off a socket; returns (status, body, leftover)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before headers")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(int(l.split(b":", 1)[1]) for l in lines[1:] if l.lower().startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status, rest[:length], rest[length:]


def client(port, keep_alive, seconds, start_at, out):
    host = "127.0.0.1"
    req = REQUEST.format(host="%s:%d" % (host, port),
                         conn="" if keep_alive else "Connection: close\r\n").encode()
    while time.time() < start_at:
        time.sleep(0.001)
    end = time.monotonic() + seconds
    ok = errors = 0
    sock = None
    buf = b""
    while time.monotonic() < end:
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=10)
                buf = b""
            sock.sendall(req)
            status, body, buf = _read_response(sock, buf)
            if status == 200 and b"<Incarnation>" in body:
                ok += 1
            else:
                errors += 1
            if not keep_alive:
                sock.close()
                sock = None
        except OSError:
            errors += 1
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()
    out.put((ok, errors))


def run(port, clients, seconds, keep_alive):
    out = multiprocessing.Queue()
    start_at = time.time() + 0.5
    procs = [multiprocessing.Process(target=client, args=(port, keep_alive, seconds, start_at, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(30)
    ok = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    return {"mode": "keep-alive" if keep_alive else "Connection: close", "clients": clients, "seconds": seconds,
            "requests_ok": ok, "errors": errors, "per_second": round(ok / seconds, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    emu = subprocess.Popen([sys.executable, "-m", "emulator", "serve", "--scenario",
                            os.path.join(REPO, "emulator", "scenarios", "default.json")],
                           cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(emu.stdout.readline())
        port = info["wireserver_port"]
        for keep_alive in (False, True):
            print(json.dumps(run(port, args.clients, args.seconds, keep_alive)), flush=True)
    finally:
        emu.terminate()
        emu.wait(10)


if __name__ == "__main__":
    main()
