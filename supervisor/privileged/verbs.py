"""The privileged verbs: the explicit list of handler modules, and the table built from their
`Privileged` rows (supervisor/broker.py), checked complete at start. Nothing registers itself:
a module not listed here serves no verb.
"""

from typing import Dict

from ipc.verbs import REGISTRY
from supervisor.broker import BOOT, PROCESS, UNPRIVILEGED_DOMAINS, Privileged
from supervisor.privileged import (accounts, boot, customdata, debug, dvd, extensions, firewall,
                                   hostname, logs, platform, resource_disk, ssh, state, telemetry,
                                   tenant_certificates)


def modules():
    """The modules of supervisor/privileged/ whose VERBS rows make the table: the list."""
    return (accounts, boot, customdata, debug, dvd, extensions, firewall, hostname, logs,
            platform, resource_disk, ssh, state, telemetry, tenant_certificates)


HANDLERS: Dict[str, Privileged] = {}


def table() -> Dict[str, Privileged]:
    """The privileged verbs, one row each; built once, checked complete."""
    if HANDLERS:
        return HANDLERS
    rows: Dict[str, Privileged] = {}
    for module in modules():
        for row in module.VERBS:
            if REGISTRY.get(row.verb) is not row.decl:
                raise RuntimeError("%s: a row for an undeclared verb" % row.verb)
            if row.verb in rows:
                raise RuntimeError("two rows for %s" % row.verb)
            if row.once not in (None, PROCESS, BOOT):
                raise RuntimeError("%s: once=%r" % (row.verb, row.once))
            if row.periodic is not None:
                from config.keys import BY_NAME
                if row.periodic[1] not in BY_NAME or not row.periodic[0] <= row.workers:
                    raise RuntimeError("%s: periodic=%r" % (row.verb, row.periodic))
            rows[row.verb] = row
    missing = sorted(name for name in REGISTRY if name.split(".")[0] not in UNPRIVILEGED_DOMAINS
                     and name not in rows)
    if missing:
        raise RuntimeError("declared privileged verbs without a row: %s" % ", ".join(missing))
    HANDLERS.update(rows)
    return HANDLERS
