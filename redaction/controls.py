"""Control characters made visible: what a worker writes (a log line, a status message) is
shown to root in a terminal (`agentctl logs`, `agentctl status`, journalctl). ESC starts
terminal commands (clear the screen, set the title, OSC 52 writes the clipboard), CR and
backspace overwrite what is shown, C1 codes are single-byte ESC on some terminals, and the
bidi overrides reorder what the eye reads. Each is replaced by its escape, `\\x1b`, `\\u202e`.

TAB stays: it moves the cursor right, nothing more. A newline in a single line (a status
message, a supervisor record) is escaped too, so one record stays one line.
"""

import re

# C0 but TAB, DEL and C1; the Arabic letter mark, zero-width and direction marks, line and
# paragraph separators, embeddings and overrides, word joiner to the isolates, BOM,
# interlinear annotation.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e"
                      "\u2060-\u2069\ufeff\ufff9-\ufffb]")


def _shown(m) -> str:
    c = ord(m.group())
    return "\\x%02x" % c if c < 0x100 else "\\u%04x" % c


def escape_controls(text: str) -> str:
    """`text` with every control character replaced by its visible escape (idempotent)."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_shown, text)
