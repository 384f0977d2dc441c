"""The one redaction filter (redaction/): a table per form, what must stay, blocks over
several lines, and property tests: a secret planted in any form, inside random text built
to confuse the filter (quotes, tags, keys, CDATA and key markers left open), never survives.

Planted secrets start with ZQX and end with QXZ, letters the surrounding text never holds:
either end seen in the output means the secret (or part of it) leaked.
"""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redaction import MARK, LineRedactor, escape_controls, redact, redact_sas, redact_url_query

# ---- one table row per form ---------------------------------------------------------------
FORMS = {
    "xml": "<UserPassword>{}</UserPassword>",
    "xml-ns-prefix": "<ns1:UserPassword>{}</ns1:UserPassword>",
    "xml-attributes": '<wa:UserPassword xmlns:wa="http://x">{}</wa:UserPassword>',
    "xml-custom-data": "<CustomData>{}</CustomData>",
    "xml-protected": "<ProtectedSettings>{}</ProtectedSettings>",
    "xml-escaped": "&lt;UserPassword&gt;{}&lt;/UserPassword&gt;",
    "cdata-in-element": "<ns1:UserPassword><![CDATA[{}]]></ns1:UserPassword>",
    "cdata": "<![CDATA[{}]]>",
    "json-object": '{{"protectedSettings": {{"commandToExecute": "{}", "n": [1, {{"a": 2}}]}}}}',
    "json-string": '"protectedSettings": "{}"',
    "json-admin": '{{"adminPassword": "{}", "user": "bob"}}',
    "json-escaped": '{{\\"adminPassword\\": \\"{}\\"}}',
    "json-quot": "{{&quot;adminPassword&quot;: &quot;{}&quot;}}",
    "pydict": "{{'adminPassword': '{}', 'user': 'bob'}}",
    "pydict-object": "{{'protectedSettings': {{'script': '{}'}}}}",
    "pydict-bytes": "{{'password': b'{}'}}",
    "quoted-double": 'password="{}" user=bob',
    "quoted-single": "passphrase='{}' user=bob",
    "kv": "password={} user=bob",
    "kv-colon": "Password: {} user=bob",
    "kv-spaces": "client_secret = {} user=bob",
    "kv-url": "https://h/p?user=bob&password={}&next=1",
    "sas": "https://a.blob.core.windows.net/c/b?sv=2020-08-04&se=2030-01-01&sp=r&sig={}&sr=b",
    "sas-first": "https://a.blob.core.windows.net/c/b?sig={}&se=2030",
    "sas-encoded": "url=https%3A%2F%2Fa%2Fb%3Fsv%3D1%26sig%3D{}%26se%3D2",
    "pem-one-line": "-----BEGIN RSA PRIVATE KEY-----{}-----END RSA PRIVATE KEY-----",
    "pem-json-escaped": '"key": "-----BEGIN PRIVATE KEY-----\\n{}\\n-----END PRIVATE KEY-----\\n"',
    "pem-open": "-----BEGIN OPENSSH PRIVATE KEY----- {}",
    "custom-data-json": '"customData": "{}"',
    "custom-data-kv": "custom_data={}",
}
SPACED = {"xml", "xml-ns-prefix", "xml-attributes", "xml-escaped", "cdata-in-element", "cdata",
          "json-object", "json-string", "json-admin", "json-escaped", "json-quot", "pydict",
          "pydict-object", "pydict-bytes", "quoted-double", "quoted-single", "pem-open",
          "custom-data-json", "xml-custom-data", "xml-protected"}


def leaked(out, secret):
    return secret in out or "ZQX" in out or "QXZ" in out


@pytest.mark.parametrize("form", sorted(FORMS))
def test_each_form_is_redacted(form):
    secret = "ZQX s3cr3t value QXZ" if form in SPACED else "ZQXs3cr3tvalueQXZ"
    line = "before " + FORMS[form].format(secret) + " after"
    out = redact(line)
    assert not leaked(out, secret), out
    assert MARK in out and out.startswith("before "), out
    # What follows stays, but after a key block that does not end on the line.
    assert out.endswith(" after") != (form == "pem-open"), out


@pytest.mark.parametrize("line,expected", [
    ("<ns1:UserPassword>x</ns1:UserPassword>", "<ns1:UserPassword>%s</ns1:UserPassword>" % MARK),
    ('{"adminPassword": "a b", "user": "bob"}', '{"adminPassword": "%s", "user": "bob"}' % MARK),
    ("{'adminPassword': 'a b'}", "{'adminPassword': '%s'}" % MARK),
    ('"protectedSettings": {"a": "b"}, "x": 1', '"protectedSettings": {%s}, "x": 1' % MARK),
    ("password=abc user=bob", "password=%s user=bob" % MARK),
    ("https://h/b?sv=1&sig=AbC%2Fd%3D&se=2025", "https://h/b?sv=1&sig=%s&se=2025" % MARK),
    ("-----BEGIN EC PRIVATE KEY-----abc-----END EC PRIVATE KEY-----",
     "-----BEGIN EC PRIVATE KEY-----%s-----END EC PRIVATE KEY-----" % MARK),
])
def test_the_key_stays_and_the_value_goes(line, expected):
    assert redact(line) == expected


@pytest.mark.parametrize("line", [
    "event=password_set user=bob",
    "event=custom_data_saved bytes=12 decoded=yes",
    "event=sshd_config path=/etc/ssh/sshd_config password_authentication=no",
    '"protectedSettingsCertThumbprint": "ABCDEF", "publicSettings": {"a": 1}',
    "<DisableSshPasswordAuthentication>false</DisableSshPasswordAuthentication>",
    "the password policy changed",
    "<UserPassword/> was empty",
    "design=flat signal=9",
    'password="" user=bob',
])
def test_what_is_not_secret_stays(line):
    assert redact(line) == line


def test_the_one_marker_is_idempotent():
    for form in FORMS.values():
        once = redact(form.format("ZQXsecretQXZ"))
        assert redact(once) == once


def test_the_platform_client_helpers_use_the_same_marker():
    assert redact_sas("https://a/b?sr=b&sig=SECRET%3D&se=1") == \
        "https://a/b?sr=b&sig=%s&se=1" % MARK
    assert redact_url_query("https://a/b?sv=1&sig=x") == "https://a/b?" + MARK
    assert redact_sas("") == ""


# ---- blocks over several lines ------------------------------------------------------------
@pytest.mark.parametrize("lines,hidden,kept", [
    (["key: -----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBg", "kqhkiG9w0BAQEF",
      "-----END PRIVATE KEY----- after"], ["MIIEvQ", "kqhk"], ["key:", "after"]),
    (["<CustomData>", "Y3VzdG9tZGF0YQ==", "</CustomData> after"], ["Y3VzdG9t"], ["after"]),
    (["<ns1:UserPassword><![CDATA[first", "second]]></ns1:UserPassword> after"],
     ["first", "second"], ["after"]),
    (['{"protectedSettings": {', '  "script": "Zm9vYmFy",', '  "n": {"deep": "ZGVlcA=="}',
      '}, "thumbprint": "AB"}'], ["Zm9vYmFy", "ZGVlcA"], ['"thumbprint": "AB"']),
    (["<![CDATA[one", "two", "three]]> after"], ["one", "two", "three"], ["after"]),
])
def test_a_block_over_several_lines_is_hidden_to_its_end(lines, hidden, kept):
    r = LineRedactor()
    out = "\n".join(r.line(l) for l in lines)
    assert not [h for h in hidden if h in out], out
    assert all(k in out for k in kept), out
    assert r.line("next line") == "next line"
    assert redact("\n".join(lines)) == out      # a whole text: the same


def test_a_block_never_closed_stops_hiding_after_its_bound():
    from redaction.secrets import MAX_LINES_HIDDEN
    r = LineRedactor()
    r.line("-----BEGIN PRIVATE KEY-----")
    assert all(r.line("body %d" % i) == MARK for i in range(MAX_LINES_HIDDEN))
    assert r.line("later") == "later"


STALLERS = {
    "objects": ("password={" * 800, True), "keys": ("password=" * 900, True),
    "words": ("password" * 1000, True), "signatures": ("sig=" * 2000, True),
    "escaped-attributes": ("&lt;password" + ' a=&quot;x&quot;' * 400, False),
    "attributes": ("<password" + ' a="x"' * 1300, False),
    "deep": ("password=" + "{" * 8000, True), "quotes": ("password=" + "'\"" * 4000, True),
    "elements": ("<UserPassword>" * 580, True),
    "keys-begun": ("-----BEGIN PRIVATE KEY-----" * 300, True),
    "backslashes": ("password=\"" + "\\a" * 4000, True),
}


@pytest.mark.parametrize("name", sorted(STALLERS))
def test_no_line_stalls_the_filter(name):
    """A worker chooses its lines: whatever it writes, one line costs milliseconds (the
    supervisor's loop must not stall), and what follows a key is hidden."""
    import time
    line, hides = STALLERS[name]
    t0 = time.perf_counter()
    out = redact(line)
    assert time.perf_counter() - t0 < 0.5
    assert (MARK in out) == hides


# ---- properties ---------------------------------------------------------------------------
# Pieces that open and close what the filter follows (quotes, tags, objects, CDATA, keys,
# key markers), and plain text without Z, Q or X.
CONFUSING = ["password", "Password", "secret", "customData", "=", ":", ": ", '"', "'", "\\",
             "\\\"", "<", ">", "</", "/>", "<UserPassword>", "</UserPassword>", "<ns1:",
             "<![CDATA[", "]]>", "{", "}", "[", "]", "&", "?", "sig=", "&lt;", "&gt;", "&quot;",
             "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----", " ", "\t", ",", "Auth",
             "b'", "%26", "%3D"]
PLAIN = st.text(alphabet="abcdefghijklmnoprstuvwy0123456789 .,;-_/", max_size=6)
SURROUNDING = st.lists(st.one_of(st.sampled_from(CONFUSING), PLAIN), max_size=12).map("".join)
WORD = st.text(alphabet="abcdefghijklmnopABCDEF0123456789+/_-", min_size=1, max_size=10)


@st.composite
def secrets(draw, spaced):
    words = draw(st.lists(WORD, min_size=1, max_size=4 if spaced else 1))
    return "ZQX" + (" " if spaced else "").join(words) + "QXZ"


@st.composite
def planted(draw):
    form = draw(st.sampled_from(sorted(FORMS)))
    secret = draw(secrets(form in SPACED))
    return draw(SURROUNDING) + FORMS[form].format(secret) + draw(SURROUNDING), secret


@settings(max_examples=2000, deadline=None)
@given(planted())
def test_a_planted_secret_never_survives(case):
    line, secret = case
    out = redact(line)
    assert not leaked(out, secret), (line, out)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(planted(), SURROUNDING.map(lambda t: (t, None))), min_size=1,
                max_size=5))
def test_a_planted_secret_never_survives_in_a_stream(cases):
    """Lines one after another: whatever an earlier line leaves open."""
    r = LineRedactor()
    for line, secret in cases:
        out = r.line(line)
        if secret is not None:
            assert not leaked(out, secret), (cases, line, out)


# ---- control characters -------------------------------------------------------------------
RAW = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069"
                 "\ufeff]")


@pytest.mark.parametrize("raw,shown", [
    ("\x1b[2J", "\\x1b[2J"), ("a\rb", "a\\x0db"), ("\x07", "\\x07"), ("\x00", "\\x00"),
    ("\x9b31m", "\\x9b31m"), ("\u202eevil", "\\u202eevil"), ("\u2066x\u2069", "\\u2066x\\u2069"),
    ("a\nb", "a\\x0ab"), ("\x7f", "\\x7f"), ("tab\tstays", "tab\tstays"),
    ("plain é ✓", "plain é ✓"),
])
def test_controls_are_shown_escaped(raw, shown):
    assert escape_controls(raw) == shown


@settings(max_examples=1000, deadline=None)
@given(st.text())
def test_no_control_character_survives_escaping(text):
    out = escape_controls(text)
    assert not RAW.search(out)
    assert escape_controls(out) == out
    if not RAW.search(text):
        assert out == text
