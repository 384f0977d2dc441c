"""What racing two prime searches for one key buys (supervisor/privileged first_to_finish):
N keys made one at a time, then N made as the broker makes them where there is a second CPU
(two searches at once, the first kept, the other killed). Prints the median, mean, 90th
percentile and maximum of each, in seconds. On an idle machine; in the VM under emulation the
searches also share the CPUs with the agent's own start (benchmarks/README.md).

    /usr/bin/python3 benchmarks/key_search_race.py [--bits 2048] [--keys 60]
"""

import argparse
import statistics
import subprocess
import time


def one(bits: int) -> float:
    start = time.monotonic()
    subprocess.run(["openssl", "genrsa", "-out", "/dev/null", str(bits)],
                   stderr=subprocess.DEVNULL, check=True)
    return time.monotonic() - start


def raced(bits: int) -> float:
    start = time.monotonic()
    procs = [subprocess.Popen(["openssl", "genrsa", "-out", "/dev/null", str(bits)],
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    while all(p.poll() is None for p in procs):
        time.sleep(0.002)
    took = time.monotonic() - start
    for p in procs:
        p.kill()
        p.wait()
    return took


def summary(times) -> str:
    ordered = sorted(times)
    return "median %.3f  mean %.3f  p90 %.3f  max %.3f" % (
        statistics.median(ordered), statistics.mean(ordered),
        ordered[int(0.9 * len(ordered))], ordered[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--keys", type=int, default=60)
    args = ap.parse_args()
    print("RSA %d, %d keys each" % (args.bits, args.keys))
    print("one search:       ", summary([one(args.bits) for _ in range(args.keys)]))
    print("two, first kept:  ", summary([raced(args.bits) for _ in range(args.keys)]))


if __name__ == "__main__":
    main()
