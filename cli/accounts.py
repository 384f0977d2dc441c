"""The system users and groups of guestagent, declared once in the sysusers.d file
(systemd/guestagent.sysusers.conf, installed as /usr/lib/sysusers.d/guestagent.conf).

Where systemd-sysusers exists, `make install` runs it. Elsewhere (containers, other inits, the
integration tests) this module reads the same file and creates what is missing with
groupadd/useradd:

    python -m cli.accounts install [FILE]   create missing groups and users
    python -m cli.accounts check [FILE]     exit 1 and list what is missing

Only the `g`, `u` and `m` lines guestagent uses are understood; anything else is an error, not
a silent skip. Existing accounts are left as they are (as systemd-sysusers does).
"""

import grp
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
CANDIDATES = (
    os.path.join(os.path.dirname(HERE), "systemd", "guestagent.sysusers.conf"),  # checkout
    "/usr/lib/sysusers.d/guestagent.conf",
    "/etc/sysusers.d/guestagent.conf",
)
NOLOGIN = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(p)),
               "/bin/false")


@dataclass(frozen=True)
class Entry:
    kind: str             # g, u, m
    name: str
    group: Optional[str]  # u: primary group name; m: the group joined
    gecos: str = ""
    home: str = "/"
    shell: str = NOLOGIN


def parse(text: str, path: str = "<sysusers>") -> List[Entry]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = shlex.split(line)
        kind = fields[0]
        if kind == "g":
            entries.append(Entry("g", fields[1], None))
        elif kind == "u":
            ident = fields[2] if len(fields) > 2 else "-"
            group = ident.split(":", 1)[1] if ":" in ident else None
            if group and group.isdigit():
                raise ValueError("%s:%d: numeric groups are not supported" % (path, number))
            entries.append(Entry("u", fields[1], group,
                                 fields[3] if len(fields) > 3 and fields[3] != "-" else "",
                                 fields[4] if len(fields) > 4 and fields[4] != "-" else "/",
                                 fields[5] if len(fields) > 5 and fields[5] != "-" else NOLOGIN))
        elif kind == "m":
            entries.append(Entry("m", fields[1], fields[2]))
        else:
            raise ValueError("%s:%d: unsupported line type %r" % (path, number, kind))
    return entries


def find_file(path: Optional[str] = None) -> str:
    if path:
        return path
    for candidate in CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError("no guestagent sysusers file in %s" % ", ".join(CANDIDATES))


def load(path: Optional[str] = None) -> List[Entry]:
    path = find_file(path)
    with open(path) as f:
        return parse(f.read(65536), path)


def _group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def missing(entries: List[Entry]) -> List[str]:
    out = []
    for e in entries:
        if e.kind == "g" and not _group_exists(e.name):
            out.append("group %s" % e.name)
        elif e.kind == "u" and not _user_exists(e.name):
            out.append("user %s" % e.name)
        elif e.kind == "m" and _user_exists(e.name) and _group_exists(e.group) \
                and e.name not in grp.getgrnam(e.group).gr_mem:
            out.append("membership %s in %s" % (e.name, e.group))
    return out


def commands(entries: List[Entry]) -> List[Tuple[str, ...]]:
    """The groupadd/useradd/usermod commands that create what is missing."""
    cmds = []
    for e in entries:
        if e.kind == "g" and not _group_exists(e.name):
            cmds.append(("groupadd", "--system", e.name))
    for e in entries:
        if e.kind == "u" and not _user_exists(e.name):
            cmd = ["useradd", "--system", "--no-create-home", "--home-dir", e.home,
                   "--shell", e.shell, "--comment", e.gecos]
            cmd += ["--gid", e.group] if e.group else ["--user-group"]
            cmds.append(tuple(cmd + [e.name]))
    for e in entries:
        if e.kind == "m":
            cmds.append(("usermod", "--append", "--groups", e.group, e.name))
    return cmds


def install(path: Optional[str] = None) -> List[str]:
    """Create the missing accounts; return what was created. Raises on a failed command."""
    entries = load(path)
    done = []
    for cmd in commands(entries):
        if shutil.which(cmd[0]) is None:
            raise FileNotFoundError("%s is not installed" % cmd[0])
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, timeout=60)
        done.append(" ".join(cmd))
    return done


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("install", "check") or len(argv) > 2:
        print("usage: python -m cli.accounts install|check [SYSUSERS_FILE]",
              file=sys.stderr)
        return 2
    path = argv[1] if len(argv) > 1 else None
    try:
        if argv[0] == "check":
            gaps = missing(load(path))
            for gap in gaps:
                print("missing: %s" % gap)
            return 1 if gaps else 0
        for line in install(path):
            print(line)
        return 0
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        print("accounts: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
