"""IPC round trip over a socketpair: our full stack against a bare framed echo, same run.

Full stack: the client's Channel.call (schema check, envelope, JSON encode, frame) and a
server process that decodes frames incrementally, parses the envelope, looks the verb up,
checks its arguments and replies; the client checks the result schema. Bare: the same
4-byte-length frames carrying the same bytes, echoed without JSON or schemas. Both sides are
separate processes, as a worker and the supervisor are. The ratio full/bare is the figure.

    /opt/guestagent/bin/python benchmarks/ipc_roundtrip.py [--seconds 3] [--cpus 0]

Where the scheduler puts the two processes moves both figures: on one CPU a round trip is
two context switches (bare echo ~11 us here), on two it is two cross-CPU wake-ups (~35 us
here, when the host is busy), and the ratio is lower. --cpus pins client and server (one
CPU for both, or "0,1" for one each) to measure one placement on purpose; by default the
scheduler chooses, as it does for the agent.
"""

import argparse
import os
import socket
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ipc import envelope, framing  # noqa: E402
from ipc.channel import Channel, recv_some, send_frame  # noqa: E402
from ipc.verbs import check_args, lookup  # noqa: E402

ARGS = {"worker": "extensions"}
RESULT = {"path": "/var/log/guestagent/extensions.log"}


def full_server(sock):
    decoder = framing.FrameDecoder()
    while True:
        data, fds = recv_some(sock)
        if not data:
            return
        for obj, _ in decoder.feed(data, fds):
            msg = envelope.parse(obj)
            verb = lookup(msg.verb)
            check_args(verb, msg.args)
            # The supervisor's reply path (Supervisor._reply_result).
            send_frame(sock, envelope.reply_frame(msg.id, RESULT))


def bare_server(sock):
    buf = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buf += data
        while len(buf) >= 4:
            (n,) = struct.unpack_from(">I", buf)
            if len(buf) < 4 + n:
                break
            body, buf = buf[4:4 + n], buf[4 + n:]
            sock.sendall(struct.pack(">I", len(RESULT_BYTES)) + RESULT_BYTES)


RESULT_BYTES = framing.encode(envelope.reply(1, RESULT))[4:]
REQUEST_BYTES = framing.encode(envelope.request(1, "control.logs", ARGS))


def bare_call(sock):
    sock.sendall(REQUEST_BYTES)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack_from(">I", buf)[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk


def run(server, call, seconds, cpus=None):
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        left.close()
        if cpus:
            os.sched_setaffinity(0, {cpus[-1]})
        try:
            server(right)
        finally:
            os._exit(0)
    right.close()
    if cpus:
        os.sched_setaffinity(0, {cpus[0]})
    client = Channel(left)
    do = (lambda: client.call("control.logs", ARGS, timeout=5)) if call == "full" \
        else (lambda: bare_call(left))
    for _ in range(200):                         # warm up
        do()
    samples = []
    end = time.monotonic() + seconds
    started = time.perf_counter()
    while time.monotonic() < end:
        t0 = time.perf_counter_ns()
        do()
        samples.append(time.perf_counter_ns() - t0)
    elapsed = time.perf_counter() - started
    left.close()
    os.waitpid(pid, 0)
    samples.sort()
    return {"p50_us": samples[len(samples) // 2] / 1000,
            "p99_us": samples[int(len(samples) * 0.99)] / 1000,
            "rps": len(samples) / elapsed, "n": len(samples)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=lambda text: [int(c) for c in text.split(",")],
                        help="pin the client to the first CPU and the server to the last")
    opts = parser.parse_args()
    ratios = []
    affinity = os.sched_getaffinity(0)
    for _ in range(opts.rounds):
        bare = run(bare_server, "bare", opts.seconds, opts.cpus)
        os.sched_setaffinity(0, affinity)
        full = run(full_server, "full", opts.seconds, opts.cpus)
        os.sched_setaffinity(0, affinity)
        ratios.append(full["p50_us"] / bare["p50_us"])
        print("bare echo : p50 %6.1f us  p99 %6.1f us  %8.0f req/s" % (
            bare["p50_us"], bare["p99_us"], bare["rps"]))
        print("full stack: p50 %6.1f us  p99 %6.1f us  %8.0f req/s" % (
            full["p50_us"], full["p99_us"], full["rps"]))
    print("ratio full/bare (p50), median of %d rounds: %.2fx (target <= 2x)" % (
        opts.rounds, statistics.median(ratios)))


if __name__ == "__main__":
    main()
