"""The hostname (protocol.md §3.4 step 6): /etc/hostname, the running kernel's (hostname(1)),
and DHCP publication: `send host-name "<name>";` in the first dhclient.conf that exists (unless
it already sends gethostname()), and Lib.Dir/published_hostname.

The interface is not bounced (waagent's ifdown/ifup costs up to a minute of boot and has
dropped the primary IP; peers-and-pain.md rows 19, 26): the worker then asks for
`boot.publish_hostname` (supervisor/privileged/boot.py), a DHCPREQUEST carrying the name, and
the DHCP client's own later requests carry it too.
"""

import logging
import os
import re

from ipc.verbs import provisioning as P
from supervisor.broker import PROCESS, PROV, PROVISIONING, Context, Privileged
from supervisor.privileged import atomic_write, lib_dir, read_capped, run

log = logging.getLogger("guestagent.broker.provisioning")

DHCLIENT_CONFS = ("/etc/dhcp/dhclient.conf", "/etc/dhcp3/dhclient.conf", "/etc/dhclient.conf")
AUTO_SEND = re.compile(r"^\s*send\s+host-name\s+=\s*gethostname\(\)\s*;", re.M)
SEND = re.compile(r"^\s*send\s+host-name\b.*$\n?", re.M)


def hostname(ctx: Context, args: dict) -> dict:
    name = args["hostname"]
    mode = os.stat("/etc/hostname").st_mode & 0o7777 if os.path.exists("/etc/hostname") else 0o644
    atomic_write("/etc/hostname", (name + "\n").encode(), mode)
    run(["hostname", name], timeout=20, cancel=ctx.cancel)
    published = False
    for path in DHCLIENT_CONFS:
        data = read_capped(path, 1024 * 1024)
        if data is None:
            continue
        text = data.decode("utf-8", "replace")
        if not AUTO_SEND.search(text):
            text = SEND.sub("", text)
            if text and not text.endswith("\n"):
                text += "\n"
            text += 'send host-name "%s";\n' % name
            atomic_write(path, text.encode(), os.stat(path).st_mode & 0o7777)
        published = True
        break
    atomic_write(os.path.join(lib_dir(ctx.conf), "published_hostname"), name.encode(), 0o600)
    log.info("event=hostname_set hostname=%s dhcp_publish=%s", name, published)
    return {"published": published}


VERBS = (
    Privileged(P.SET_HOSTNAME, hostname, PROV, once=PROCESS, gate=PROVISIONING, slow=True),
)
