"""`python -m config render` prints etc/waagent.conf; `python -m config check FILE` checks one."""

import sys

from config import ConfigError, load
from config.shipped import render


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["render"]:
        sys.stdout.write(render())
        return 0
    if len(argv) == 2 and argv[0] == "check":
        try:
            conf = load(argv[1], report=False)
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 2
        for problem in conf.problems + conf.not_applied:
            print(problem)
        return 1 if conf.problems else 0   # keys not applied yet are warnings
    print("usage: python -m config render | check FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
