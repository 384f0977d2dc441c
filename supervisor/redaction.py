"""The one redaction filter: every log line the supervisor writes (its own, and every line
captured from a worker's stdout/stderr) passes through here before it reaches a file or the
journal. Workers log to a pipe owned by the supervisor, so this is the single choke point.

What it removes (the value is replaced by `<redacted>`, the key stays so the line still says
what happened):
- passwords and other secrets as JSON members, `key=value` pairs and XML elements
  (`"adminPassword": "…"`, `password=…`, `<UserPassword>…</UserPassword>`);
- `protectedSettings` (JSON member or XML element) — not the thumbprint next to it;
- the signature of a SAS URL (`sig=…`);
- PEM private keys, on one line or as a block over several lines (LineRedactor keeps the
  state between lines of one stream).
"""

import re

MARK = "<redacted>"

_SECRET_WORD = r"[A-Za-z_]*(?:[Pp]assword|PASSWORD|[Pp]asswd|[Ss]ecret|SECRET|[Pp]assphrase)"
_PROTECTED = r"[Pp]rotected[Ss]ettings"
_KEY = r"(?:%s|%s)" % (_SECRET_WORD, _PROTECTED)

_JSON = re.compile(r'("%s"\s*:\s*)"(?:[^"\\]|\\.)*"?' % _KEY)
_JSON_ESCAPED = re.compile(r'(\\"%s\\"\s*:\s*)\\"(?:[^"\\]|\\[^"])*(?:\\")?' % _KEY)
_XML = re.compile(r"(<(%s)(?:\s[^>]*)?>)[^<]*" % _KEY)
_KV = re.compile(r"(\b%s\s*[=:]\s*)(?!<redacted>)[^\s&\"',;]+" % _KEY)
_SAS = re.compile(r"(?i)((?:[?&]|\b)sig=)[^&\s\"'<>]+")
_PEM_ONE_LINE = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?(?:-----END \1-----|$)")
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")


def redact(text: str) -> str:
    """Redact one line (or a whole text: a PEM block spanning lines is removed too)."""
    if "PRIVATE KEY" in text:
        text = re.sub(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?(?:-----END \1-----|\Z)",
                      "-----BEGIN \\1-----" + MARK, text, flags=re.S)
    text = _JSON.sub(r'\1"%s"' % MARK, text)
    text = _JSON_ESCAPED.sub(r'\1\\"%s\\"' % MARK, text)
    text = _XML.sub(r"\1%s" % MARK, text)
    text = _KV.sub(r"\1%s" % MARK, text)
    text = _SAS.sub(r"\1%s" % MARK, text)
    return text


class LineRedactor:
    """Redact a stream line by line, remembering when a line opened a PEM private key block."""

    def __init__(self):
        self.in_key = False

    def line(self, text: str) -> str:
        if self.in_key:
            if _PEM_END.search(text):
                self.in_key = False
                return MARK + " (end of private key)"
            return MARK
        begin = _PEM_BEGIN.search(text)
        if begin and not _PEM_END.search(text, begin.end()):
            self.in_key = True
            return redact(text[:begin.start()]) + begin.group(0) + MARK
        return redact(text)
