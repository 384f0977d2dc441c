"""`waagent -serialconsole`: the kernel's console on the first serial port, as waagent 2.0 did
(protocol.md §7: `console=ttyS0 earlyprintk=ttyS0` on the kernel command line), so the
platform's serial console and boot diagnostics show the boot.

Run by root. The grub configuration is edited under OS.SysRoot (the root prefix; "/" on a
VM): /etc/default/grub for every later grub-mkconfig, and the generated grub.cfg (or legacy
menu.lst) for the next boot (supervisor/privileged/grub.py). Running it twice changes nothing.
"""

import os
import sys

WORDS = ("console=ttyS0", "earlyprintk=ttyS0")


def main(config_path: str) -> int:
    import config
    from ipc.errors import IpcError
    from supervisor.privileged import grub
    if os.geteuid() != 0:
        print("waagent: -serialconsole edits the grub configuration: run it as root",
              file=sys.stderr)
        return 1
    try:
        conf = config.load(config_path)
    except config.ConfigError as e:
        print("waagent: %s" % e, file=sys.stderr)
        return 1
    root = conf["OS.SysRoot"] or "/"
    try:
        changed = grub.add_kernel_words(root, WORDS)
    except IpcError as e:
        print("waagent: -serialconsole: %s" % e.message, file=sys.stderr)
        return 1
    except OSError as e:
        print("waagent: -serialconsole: %s: %s" % (e.filename, e.strerror), file=sys.stderr)
        return 1
    if changed:
        print("serial console: %s added to %s (from the next boot)"
              % (" ".join(WORDS), ", ".join(os.path.join(root, c) for c in changed)))
    else:
        print("serial console: the kernel command line has %s already" % " ".join(WORDS))
    return 0
