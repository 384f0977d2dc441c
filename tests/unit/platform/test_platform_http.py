"""HTTP rules against a small scripted server on 127.0.0.1: backoff sequence, Retry-After,
throttled budgets, caps, and which requests may use a proxy."""

import http.server
import threading
import time

import pytest

from config import defaults
from workers.platform.errors import HttpError, InvalidContainerError, ResourceGoneError, ResponseTooLargeError
from workers.platform.http import HttpClient, fibonacci_multiple, parse_retry_after
from redaction import redact_sas


class Scripted(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        self.script, self.seen, self.bodies = [], [], []
        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.seen.append((self.path, dict(self.headers)))
        status, headers, body = self.server.script.pop(0) if self.server.script else (200, {}, b"ok")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        length = self.headers.get("Content-Length")
        self.server.bodies.append(self.rfile.read(int(length)) if length is not None else None)
        self.do_GET()


@pytest.fixture
def server():
    s = Scripted()
    yield s
    s.shutdown()
    s.server_close()


def client(sleeps, **more):
    conf = defaults().with_overrides(Protocol__HttpTimeout=2.0, Protocol__RetryDelay=1.0,
                                     Protocol__ThrottleDelay=0.5, **more)
    return HttpClient(conf, sleep=sleeps.append, rng=lambda: 0.5)   # rng 0.5: no jitter


def test_fibonacci():
    assert [fibonacci_multiple(n) for n in range(1, 7)] == [2, 3, 5, 8, 13, 21]


def test_backoff_then_success(server):
    sleeps = []
    server.script = [(500, {}, b""), (502, {}, b""), (504, {}, b""), (200, {}, b"done")]
    r = client(sleeps).request("GET", server.url + "/x")
    assert r.body == b"done" and sleeps == [2.0, 3.0, 5.0]
    assert server.seen[0][1]["User-Agent"].startswith("WALinuxAgent/2.")
    # A GET may stay open for the next request (the keep-alive tests below).
    assert "Connection" not in server.seen[0][1]


def test_throttled_budget_and_retry_after(server):
    sleeps = []
    server.script = [(429, {"Retry-After": "3"}, b"")] + [(503, {}, b"")] * 30
    with pytest.raises(HttpError) as e:
        client(sleeps, Protocol__ThrottledAttempts=7).request("GET", server.url + "/x")
    assert e.value.attempts == 7 and e.value.status == 503
    assert sleeps == [3.0] + [0.5] * 5
    assert "gave up after 7 attempts; last: 503" in str(e.value)


def test_not_retried(server):
    sleeps = []
    server.script = [(404, {}, b"")]
    with pytest.raises(HttpError) as e:
        client(sleeps).request("GET", server.url + "/x")
    assert e.value.status == 404 and sleeps == []
    server.script = [(410, {}, b"")]
    with pytest.raises(ResourceGoneError):
        client(sleeps).request("GET", server.url + "/x")
    server.script = [(400, {}, b"<Error><Code>InvalidContainerConfiguration</Code></Error>")]
    with pytest.raises(InvalidContainerError):
        client(sleeps).request("GET", server.url + "/x")
    server.script = [(400, {}, b"other")]
    with pytest.raises(HttpError) as e:
        client(sleeps).request("GET", server.url + "/x")
    assert e.value.status == 400 and sleeps == []


def test_400_retried_for_manifests(server):
    sleeps = []
    server.script = [(400, {}, b""), (200, {}, b"m")]
    c = client(sleeps)
    assert c.request("GET", server.url + "/x", policy=c.policy(retry_400=True)).body == b"m"


def test_caps(server):
    sleeps = []
    server.script = [(200, {"Content-Length": "5000"}, b"")]
    with pytest.raises(ResponseTooLargeError, match="not read"):
        client(sleeps).request("GET", server.url + "/x", max_bytes=100)
    server.script = [(200, {}, b"y" * 101)]
    with pytest.raises(ResponseTooLargeError):
        client(sleeps).request("GET", server.url + "/x", max_bytes=100)
    server.script = [(200, {}, b"y" * 100)]
    assert len(client(sleeps).request("GET", server.url + "/x", max_bytes=100).body) == 100


def test_retry_after_forms():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_sas_redaction():
    assert redact_sas("https://a/b?sr=b&sig=SECRET%3D&se=1") == "https://a/b?sr=b&sig=***REDACTED***&se=1"


def test_wire_traffic_ignores_environment_proxies(server, monkeypatch):
    proxy = Scripted()
    try:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        client([]).request("GET", server.url + "/direct")
        assert [p for p, _ in server.seen] == ["/direct"] and proxy.seen == []
        # Storage honours the environment's proxy when waagent.conf names none.
        client([]).request("GET", server.url + "/blob", proxied=True)
        assert proxy.seen[0][0] == server.url + "/blob"
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_storage_uses_the_configured_proxy(server, monkeypatch):
    proxy = Scripted()
    try:
        for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        c = client([], HttpProxy__Host="127.0.0.1", HttpProxy__Port=proxy.server_address[1])
        c.request("PUT", server.url + "/status?sig=x", body=b"{}", proxied=True)
        assert proxy.seen[0][0] == server.url + "/status?sig=x" and server.seen == []
        c.request("GET", server.url + "/wire")
        assert server.seen[0][0] == "/wire" and len(proxy.seen) == 1
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        c.request("GET", server.url + "/bypass", proxied=True)
        assert server.seen[-1][0] == "/bypass" and len(proxy.seen) == 1
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_direct_put_sends_its_whole_body_with_its_length(server, tmp_path):
    """The WireServer and HostGAPlugin go through http.client alone: a file body (the log
    bundle) goes with its Content-Length, never chunked (HostGAPlugin's /vmAgentLog wants the
    length); bytes likewise; the headers are the agent's, Connection: close."""
    bundle = tmp_path / "logs.zip"
    bundle.write_bytes(bytes(range(256)) * 1000)
    c = client([])
    with open(bundle, "rb") as body:
        c.request("PUT", server.url + "/vmAgentLog", body=body)
    c.request("PUT", server.url + "/status", body=b'{"a": 1}')
    assert server.bodies == [bundle.read_bytes(), b'{"a": 1}']
    (path, headers), _ = server.seen
    assert path == "/vmAgentLog"
    assert headers["Content-Length"] == str(256 * 1000)
    assert "Transfer-Encoding" not in headers
    # A file body cannot be sent again on a new connection: it never goes on a kept one.
    assert headers["Connection"] == "close" and headers["User-Agent"].startswith("WALinuxAgent")


def test_a_header_value_with_a_line_break_is_not_sent(server):
    with pytest.raises(HttpError, match="not sent"):
        client([]).request("GET", server.url + "/x", headers={"If-None-Match": "a\r\nX-Evil: 1"})
    assert server.seen == []


class KeepAlive(http.server.ThreadingHTTPServer):
    """HTTP/1.1, as the emulator and the WireServer answer: counts the connections it accepts;
    an idle connection is closed after `idle` seconds, as a server's keep-alive timeout does."""
    daemon_threads = True

    def __init__(self, idle=5.0):
        self.connections, self.seen = [], []
        handler = type("H", (KeepAliveHandler,), {"timeout": idle})
        super().__init__(("127.0.0.1", 0), handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]


class KeepAliveHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.connections.append(self.client_address)

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append((self.command, self.path, self.headers.get("Connection")))
        if self.path == "/304":
            self.send_response(304)
            self.end_headers()
            return
        body = b"x" * (100000 if self.path == "/big" else 10)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = answer


@pytest.fixture
def keepalive():
    made = []

    def make(**kw):
        made.append(KeepAlive(**kw))
        return made[-1]
    yield make
    for s in made:
        s.shutdown()
        s.server_close()


def test_the_polls_share_one_connection_and_a_post_has_its_own(keepalive):
    s = keepalive()
    c = client([])
    c.request("GET", s.url + "/machine?comp=goalstate")
    c.request("GET", s.url + "/304", ok=(200, 304))     # vmSettings unchanged: no body
    c.request("PUT", s.url + "/status", body=b"{}")
    assert len(s.connections) == 1, s.seen
    c.request("POST", s.url + "/machine?comp=health", body=b"<Health/>")
    c.request("GET", s.url + "/machine?comp=goalstate")
    assert len(s.connections) == 2, s.seen
    assert [conn for method, _, conn in s.seen if method == "POST"] == ["close"]
    assert [conn for method, _, conn in s.seen if method != "POST"] == [None] * 4
    c.close()


def test_a_kept_connection_the_server_closed_is_replaced_without_a_retry(keepalive):
    s = keepalive(idle=0.2)
    sleeps = []
    c = client(sleeps)
    assert c.request("GET", s.url + "/a").body == b"x" * 10
    time.sleep(0.6)      # the server closed the idle connection meanwhile
    assert c.request("PUT", s.url + "/status", body=b"{}").body == b"x" * 10
    assert sleeps == [] and len(s.connections) == 2
    assert [path for _, path, _ in s.seen] == ["/a", "/status"]   # each answered once


def test_a_body_left_unread_never_leaves_its_connection_open_for_the_next(keepalive):
    # (Sent on it, the next request would read the rest of that body as its status line: a
    # failed attempt and a retry's wait.)
    s = keepalive()
    sleeps = []
    c = client(sleeps)
    with pytest.raises(ResponseTooLargeError):
        c.request("GET", s.url + "/big", max_bytes=1000)
    assert c.request("GET", s.url + "/a").body == b"x" * 10
    assert sleeps == [] and len(s.connections) == 2
