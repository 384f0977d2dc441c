"""HTTP with the retry, throttle and stale-goal-state rules of protocol.md §1.2.

- Success is 200/201/202 (a caller may accept more, e.g. 304 for vmSettings).
- Retried: 205, 206, 403, 429, 500, 501, 502, 503, 504, 507 (and 400 for HostGAPlugin manifest
  fetches), connection errors, resets, timeouts, truncated bodies. Waits are Fibonacci multiples
  of Protocol.RetryDelay (2, 3, 5, 8, 13 ... before attempts 2, 3, 4 ...), jittered, capped, on
  the monotonic clock.
- Throttled (403/429/503): later waits are Protocol.ThrottleDelay, or the server's Retry-After
  when it asks for longer, and the attempt budget grows to Protocol.ThrottledAttempts (telemetry
  keeps its 3 attempts and an 8 s throttle delay).
- 410 Gone raises ResourceGoneError and 400 with InvalidContainerConfiguration raises
  InvalidContainerError at once: the caller refreshes the goal state and tries again.
- Every body is streamed and stops at its cap (a Content-Length over the cap is refused before
  any of the body is read); every attempt has a deadline for the whole body, so a body trickled
  a byte at a time cannot hold a worker.
- The WireServer, HostGAPlugin and IMDS are never proxied: they are plain http:// on a link-local
  or host address, so they go through http.client alone (no environment, no proxy, no
  redirects), which costs a third of the CPU of a `requests` session: the extensions worker
  polls them every 6 s for the life of the VM (issue 13, idle CPU). Their GETs and PUTs (the
  poll: goal state, vmSettings, status) keep their connection open for the next one: in a VM
  under emulation a new TCP connection cost ten times the CPU of a request on an open one
  (issue 17). A kept connection the server closed meanwhile is replaced at once, before any
  attempt is counted; a POST (a report, an event) gets a connection of its own, closed after.
  Storage requests use `requests` with HttpProxy.Host/Port, else the environment's
  http(s)_proxy with no_proxy. `requests` (with urllib3, ssl and idna: ~17 MiB) is imported by
  the first such request, not before: the resident workers' poll never makes one, and the
  extensions worker makes its downloads in a short-lived fork (launch/forked.py; issue 17).
"""

import email.utils
import http.client
import logging
import os
import random
import socket
import time
import sys
import urllib.parse
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Tuple

from workers.platform.errors import (HttpError, InvalidContainerError, ResourceGoneError,
                                     ResponseTooLargeError)
from workers.platform.identity import USER_AGENT
from redaction import install_log_redaction, redact_sas

log = logging.getLogger(__name__)

OK_STATUSES = (200, 201, 202)
RETRY_STATUSES = frozenset((205, 206, 403, 429, 500, 501, 502, 503, 504, 507))
THROTTLE_STATUSES = frozenset((403, 429, 503))
INVALID_CONTAINER = b"InvalidContainerConfiguration"

# One wait never exceeds this (Fibonacci growth of a 15 s health-report delay would otherwise
# reach hours); a Retry-After longer than MAX_RETRY_AFTER is honoured up to it.
MAX_BACKOFF = 60.0
MAX_RETRY_AFTER = 300.0
JITTER = 0.2
# How much of an error body is read (to find InvalidContainerConfiguration, for messages).
ERROR_BODY_BYTES = 64 * 1024
CHUNK = 64 * 1024


class RetryPolicy(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    attempts: int
    retry_delay: float
    throttle_delay: float
    throttled_attempts: int
    retry_400: bool = False           # HGAP extensionArtifact manifest fetches
    grow_when_throttled: bool = True  # telemetry keeps its budget

    @classmethod
    def from_config(cls, config, **changes) -> "RetryPolicy":
        policy = cls(attempts=config["Protocol.HttpAttempts"],
                     retry_delay=config["Protocol.RetryDelay"],
                     throttle_delay=config["Protocol.ThrottleDelay"],
                     throttled_attempts=config["Protocol.ThrottledAttempts"])
        return policy.but(**changes) if changes else policy

    def but(self, **changes) -> "RetryPolicy":
        return self._replace(**changes)


class Response:   # not a dataclass: see spawner/zygote.py PRELOAD
    __slots__ = ("status", "reason", "headers", "body", "url")

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], body: bytes,
                 url: str = ""):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.url = url

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name)


def fibonacci_multiple(retry: int) -> int:
    """The Fibonacci factor of the wait before retry `retry` (1 -> 2, 2 -> 3, 3 -> 5, 4 -> 8)."""
    a, b = 1, 1
    for _ in range(max(retry, 1)):
        a, b = b, a + b
    return b


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 10 ** 6))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class _Retryable(Exception):
    """One attempt failed in a way the next attempt may fix."""

    def __init__(self, message: str, status: Optional[int] = None,
                 retry_after: Optional[float] = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def proxies_from_config(config) -> Optional[Dict[str, str]]:
    host, port = config["HttpProxy.Host"], config["HttpProxy.Port"]
    if not host:
        return None
    proxy = "http://%s:%s" % (host, port) if port else "http://%s" % host
    return {"http": proxy, "https": proxy}


class HttpClient:
    """Requests with the protocol's rules. One per worker; thread-compatible, not thread-safe."""

    def __init__(self, config, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random):
        install_log_redaction()
        self.config = config
        self.timeout = float(config["Protocol.HttpTimeout"])
        self.max_bytes = int(config["Protocol.MaxResponseBytes"])
        self._sleep, self._clock, self._rng = sleep, clock, rng
        self._config_proxies = proxies_from_config(config)
        self._sessions: Dict[bool, object] = {}   # proxied? -> requests.Session, when needed
        # Open connections to the WireServer, HostGAPlugin, IMDS: (host, port) -> connection.
        self._kept: Dict[Tuple[str, int], http.client.HTTPConnection] = {}

    def _session(self, proxied: bool):
        """The `requests` session for URLs http.client does not take: storage (proxied:
        HttpProxy.* from waagent.conf, else the environment with no_proxy) or a direct one
        (never proxied: the environment is not consulted at all, no proxy, no netrc)."""
        session = self._sessions.get(proxied)
        if session is None:
            import requests
            session = self._sessions[proxied] = requests.Session()
            if not proxied:
                session.trust_env = False
                session.proxies = {}
            elif self._config_proxies:
                session.trust_env = False
        return session

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        for conn in self._kept.values():
            conn.close()
        self._kept.clear()

    def policy(self, **changes) -> RetryPolicy:
        return RetryPolicy.from_config(self.config, **changes)

    # -- one request with retries ------------------------------------------------------------

    def request(self, method: str, url: str, *, headers: Optional[Mapping[str, str]] = None,
                body: Optional[bytes] = None, policy: Optional[RetryPolicy] = None,
                max_bytes: Optional[int] = None, proxied: bool = False,
                ok: Tuple[int, ...] = OK_STATUSES, timeout: Optional[float] = None,
                deadline: Optional[float] = None) -> Response:
        """The response of the first attempt with a status in `ok`, or an HttpError.

        `deadline` (monotonic seconds) bounds the whole call, waits included.
        """
        policy = policy or self.policy()
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        timeout = self.timeout if timeout is None else timeout
        budget = policy.attempts
        throttled = False
        attempt = 0
        last = "no attempt made"
        last_status = None
        while attempt < budget:
            attempt += 1
            if deadline is not None and self._clock() >= deadline:
                last = "%s (time budget spent)" % last
                break
            try:
                return self._attempt(method, url, headers, body, max_bytes, proxied, ok,
                                     timeout, deadline, policy)
            except _Retryable as failure:
                last, last_status = str(failure), failure.status
                if failure.status in THROTTLE_STATUSES:
                    if not throttled and policy.grow_when_throttled:
                        budget = max(budget, policy.throttled_attempts)
                    throttled = True
                if attempt >= budget:
                    break
                wait = self._wait(policy, attempt + 1, throttled, failure.retry_after)
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - self._clock()))
                log.info("%s %s: %s; attempt %d of %d in %.2fs", method, redact_sas(url), last,
                         attempt + 1, budget, wait)
                self._sleep(wait)
        # The URL redacted here, on failure: a regex over every URL was ~1% of an idle poll.
        raise HttpError("%s %s: gave up after %d attempt%s; last: %s"
                        % (method, redact_sas(url), attempt, "" if attempt == 1 else "s", last),
                        status=last_status, attempts=attempt)

    def _wait(self, policy: RetryPolicy, next_attempt: int, throttled: bool,
              retry_after: Optional[float]) -> float:
        if throttled:
            base = policy.throttle_delay
        else:
            base = min(policy.retry_delay * fibonacci_multiple(next_attempt - 1), MAX_BACKOFF)
        wait = base * (1.0 + JITTER * (2.0 * self._rng() - 1.0))
        if retry_after is not None:
            wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
        return max(0.0, wait)

    def _attempt(self, method, url, headers, body, max_bytes, proxied, ok, timeout, deadline,
                 policy) -> Response:
        target = None if proxied else _plain_http(url)
        # Idempotent, with a body that can be sent again: may go on a kept connection.
        keep = target is not None and method in KEEP_METHODS and not hasattr(body, "read")
        sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if not keep:
            sent["Connection"] = "close"
        sent.update(headers or {})
        proxies = None
        if proxied and self._config_proxies:
            import requests.utils
            if not requests.utils.should_bypass_proxies(url, None):
                proxies = self._config_proxies
        started = self._clock()
        # A document's whole body gets three socket timeouts; a download gets its budget.
        body_deadline = started + max(timeout, 0.001) * 3 if deadline is None else deadline
        try:
            if target is not None:
                resp = self._direct_request(target, method, sent, body, timeout, keep)
            else:
                resp = self._session(proxied).request(method, url, headers=sent, data=body, stream=True,
                                       timeout=(timeout, timeout), allow_redirects=False,
                                       proxies=proxies)
        except (http.client.InvalidURL,) + _requests_errors("InvalidURL") as e:
            raise HttpError("%s %s: invalid URL (%s)" % (method, redact_sas(url),
                                                        type(e).__name__)) from None
        except ValueError as e:      # http.client refuses a header value with CR or LF
            raise HttpError("%s %s: not sent: %s" % (method, redact_sas(url),
                                                    str(e)[:100])) from None
        except (OSError, http.client.HTTPException) + _requests_errors("RequestException") as e:
            raise _Retryable(_describe(e)) from None
        try:
            status = resp.status_code
            if status in ok:
                data = self._read(resp, max_bytes, body_deadline, url)
                return Response(status, resp.reason or "", resp.headers, data, url)
            if status == 410:
                raise ResourceGoneError("%s %s: 410 Gone" % (method, redact_sas(url)),
                                        status=410, attempts=1)
            error_body = b""
            try:
                error_body = self._read(resp, ERROR_BODY_BYTES, body_deadline, url,
                                        truncate=True)
            except _Retryable:
                pass
            if status == 400 and INVALID_CONTAINER in error_body:
                raise InvalidContainerError("%s %s: 400 InvalidContainerConfiguration"
                                            % (method, redact_sas(url)), status=400, attempts=1)
            described = "%d %s" % (status, resp.reason or "")
            if status in RETRY_STATUSES or (status == 400 and policy.retry_400):
                retry_after = None
                if status in THROTTLE_STATUSES:
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                raise _Retryable(described.strip(), status, retry_after)
            raise HttpError("%s %s: %s" % (method, redact_sas(url), described.strip()),
                            status=status, attempts=1)
        finally:
            resp.close()

    def _direct_request(self, target, method, headers, body, timeout, keep) -> "_DirectResponse":
        host, port, _ = target
        conn = self._kept.pop((host, port), None) if keep else None
        if conn is not None:
            conn.timeout = timeout
            # Set again only when it differs: each settimeout is a syscall, and a poll's
            # requests share one timeout (issue 17's idle CPU).
            if conn.sock is not None and conn.sock.gettimeout() != timeout:
                conn.sock.settimeout(timeout)
            try:
                return _DirectResponse(conn, target, method, headers, body, self._kept)
            except ConnectionError:
                # The server closed it while it was idle (RemoteDisconnected, a reset, a
                # broken pipe): nothing was answered, so the request goes again, on a new one.
                pass
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        return _DirectResponse(conn, target, method, headers, body, self._kept if keep else None)

    def _read(self, resp, cap: int, deadline: float, url: str, truncate: bool = False) -> bytes:
        """At most `cap` bytes of the body, never more, within `deadline`."""
        length = resp.headers.get("Content-Length")
        if length is not None and not truncate:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > cap:
                raise ResponseTooLargeError(
                    "%s: the body is %d bytes, the cap is %d; not read"
                    % (redact_sas(url), declared, cap), status=resp.status_code, attempts=1)
        raw = resp.raw
        fp = getattr(raw, "_fp", None)
        read1 = getattr(fp, "read1", None)
        chunks, total = [], 0
        try:
            while True:
                if self._clock() > deadline:
                    raise _Retryable("the body took longer than its deadline (%d bytes read)"
                                     % total)
                want = min(CHUNK, cap + 1 - total)
                if want <= 0:
                    break
                # read1: at most one recv, so a trickled body meets the deadline check.
                chunk = read1(want) if read1 is not None else raw.read(want)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except _Retryable:
            raise
        except (OSError, http.client.HTTPException, ValueError) + \
                _requests_errors("RequestException") as e:
            raise _Retryable("reading the body: %s" % _describe(e)) from None
        except Exception as e:  # urllib3's own errors (ProtocolError, ReadTimeoutError ...)
            if type(e).__module__.startswith("urllib3"):
                raise _Retryable("reading the body: %s" % _describe(e)) from None
            raise
        data = b"".join(chunks)
        if len(data) > cap:
            if truncate:
                return data[:cap]
            raise ResponseTooLargeError("%s: the body is larger than its cap of %d bytes; "
                                        "stopped reading" % (redact_sas(url), cap),
                                        status=resp.status_code, attempts=1)
        if length is not None and not truncate:
            try:
                if int(length) != len(data):
                    raise _Retryable("truncated body: %d of %s bytes" % (len(data), length))
            except ValueError:
                pass
        return data


def _plain_http(url: str) -> Optional[Tuple[str, int, str]]:
    """(host, port, path?query) of an http:// URL; None for anything else (https, a bad
    URL), which `requests` then handles and judges."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 80
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.hostname or parts.username or parts.password:
        return None
    path = parts.path or "/"
    return parts.hostname, port, path + ("?" + parts.query if parts.query else "")


KEEP_METHODS = frozenset(("GET", "HEAD", "PUT"))


class _DirectResponse:
    """One request over an http.client connection, shaped as the part of a `requests`
    response that _attempt and _read use (status_code, reason, headers, raw._fp, close).
    Given `kept`, close() puts the connection there when the body was read to its end and
    the server keeps it open; else (an error, a body left unread) it is closed."""

    def __init__(self, conn: http.client.HTTPConnection, target: Tuple[str, int, str],
                 method: str, headers: Mapping[str, str], body,
                 kept: Optional[Dict[Tuple[str, int], http.client.HTTPConnection]]):
        host, port, path = target
        headers = dict(headers)
        if hasattr(body, "fileno"):     # a file (the log bundle): its length, never chunked
            headers["Content-Length"] = str(os.fstat(body.fileno()).st_size - body.tell())
        self._conn, self._kept, self._key = conn, kept, (host, port)
        try:
            conn.request(method, path, body=body, headers=headers)
            self._fp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        self.raw = self
        self.status_code = self._fp.status
        self.reason = self._fp.reason
        self.headers = self._fp.headers       # case-insensitive get(), as requests' headers

    def close(self) -> None:
        # A body with no bytes (304, 204, Content-Length: 0) is at its end before any read.
        ended = self._fp.isclosed() or self._fp.length == 0
        self._fp.close()
        if self._kept is not None and ended and not self._fp.will_close:
            old = self._kept.pop(self._key, None)
            if old is not None:
                old.close()
            self._kept[self._key] = self._conn
        else:
            self._conn.close()


def _requests_errors(name: str) -> tuple:
    """requests.exceptions.<name>, once `requests` is loaded; until then no request can have
    raised it (only HttpClient._session imports it)."""
    module = sys.modules.get("requests.exceptions")
    return (getattr(module, name),) if module is not None else ()


def _describe(error: BaseException) -> str:
    """A short, secret-free name of a transport error."""
    for cause in (error, getattr(error, "__context__", None)):
        if isinstance(cause, (socket.timeout,) + _requests_errors("Timeout")):
            return "timed out"
    text = str(error)
    for word, name in (("Connection refused", "connection refused"),
                       ("Connection reset", "connection reset"),
                       ("RemoteDisconnected", "connection closed without a response"),
                       ("BadStatusLine", "bad status line"),
                       ("IncompleteRead", "incomplete body"),
                       ("timed out", "timed out"),
                       ("Read timed out", "timed out")):
        if word in text:
            return name
    return "%s: %s" % (type(error).__name__, redact_sas(text)[:200])
