"""The text of etc/waagent.conf, rendered from the key table so the two never drift apart."""

from config.keys import KEYS, SWITCH

HEADER = """\
#
# /etc/waagent.conf, read by guestagent (and by the Azure Linux VM Agent it replaces).
#
# Every key guestagent reads is listed below, commented out, with its default: uncomment a
# line to change it. Defaults are waagent's own, so an image that ran waagent behaves the same.
# `guestagentd --check-config` reports unknown keys and bad values with file and line.
#
"""

OURS = """
#
# guestagent's own keys (waagent ignores them): relocate an instance, point it at an
# emulator, and tune the periods, retries and timeouts that waagent hard-codes.
#
"""


def format_value(key, value=None) -> str:
    value = key.default if value is None else value
    if value is None:
        return "None"
    if key.kind == SWITCH:
        return "y" if value else "n"
    return str(value)


def render() -> str:
    parts = [HEADER]
    wrote_ours = False
    for key in KEYS:
        if key.ours and not wrote_ours:
            parts.append(OURS)
            wrote_ours = True
        parts.append("\n")
        if key.doc:
            parts.append("# %s\n" % key.doc)
        if key.choices:
            parts.append("# One of: %s.\n" % ", ".join(key.choices))
        parts.append("#%s=%s\n" % (key.name, format_value(key)))
    return "".join(parts)
