"""The HTTP side: a WireServer (with the storage blobs it names), a HostGAPlugin and an IMDS, each a
real ThreadingHTTPServer, sharing one Emulator that routes, checks headers, applies scripted faults,
records what it receives and answers the /_emulator control API.
"""
import base64
import binascii
import collections
import json
import logging
import queue
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator import cms, documents, faults, receipts
from emulator.replay import ReadOnlyReplay

log = logging.getLogger("emulator")

CAP_WS_POST = 1 << 20
CAP_STATUS_BLOB = 8 << 20
CAP_HGAP_STATUS = 16 << 20
CAP_LOG_UPLOAD = 128 << 20
CAP_CONTROL = 1 << 20
MAX_PAGE_BLOB = 64 << 20
MAX_PAGE_WRITE = 4 << 20
RECENT_REQUESTS = 500

XML = "text/xml; charset=utf-8"
JSON = "application/json; charset=utf-8"
_SIG_RE = re.compile(r"(sig=)[^&]*")


class Response:
    __slots__ = ("status", "body", "ctype", "headers")

    def __init__(self, status, body=b"", ctype=XML, headers=None):
        self.status = status
        self.body = body if isinstance(body, bytes) else body.encode("utf-8")
        self.ctype = ctype
        self.headers = headers or []


def _error_xml(code, message):
    return ('<?xml version="1.0" encoding="utf-8"?>\n<Error>\n  <Code>%s</Code>\n  <Message>%s</Message>\n</Error>\n'
            % (code, message.replace("&", "&amp;").replace("<", "&lt;")))


def _json(obj, status=200):
    return Response(status, json.dumps(obj, indent=1, sort_keys=True), JSON)


class RequestTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GuestAgentEmulator/1.0"
    sys_version = ""
    # a client that goes silent must not hold a thread forever
    timeout = 60

    def setup(self):
        super().setup()
        # headers and body leave in two writes; without this, Nagle and the peer's delayed ACK hold
        # the second one ~40 ms on a keep-alive connection
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.server.role, fmt % args)

    def do_GET(self):
        self.server.emulator.handle(self, "GET")

    def do_POST(self):
        self.server.emulator.handle(self, "POST")

    def do_PUT(self):
        self.server.emulator.handle(self, "PUT")

    def do_DELETE(self):
        self.server.emulator.handle(self, "DELETE")

    def do_HEAD(self):
        self.server.emulator.handle(self, "HEAD")


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a pool of reusable threads: waagent sends `Connection: close`
    (guestagent too, for its reports and events), so most requests are a new connection, and
    starting a thread for each costs as much as serving it. When every pooled thread is busy
    (keep-alive connections: guestagent's polls), a new thread is started as
    ThreadingHTTPServer would."""
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    pool_size = 16

    def __init__(self, addr, emulator, role):
        self.emulator = emulator
        self.role = role
        self._pool_lock = threading.Lock()
        self._idle = 0
        self._pool_threads = 0
        self._work = queue.SimpleQueue()
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address):
        with self._pool_lock:
            if self._idle > 0:
                self._idle -= 1
                self._work.put((request, client_address))
                return
            pooled = self._pool_threads < self.pool_size
            if pooled:
                self._pool_threads += 1
        if pooled:
            threading.Thread(target=self._pool_worker, args=(request, client_address), daemon=True,
                             name="%s-pool" % self.role).start()
        else:
            super().process_request(request, client_address)

    def _pool_worker(self, request, client_address):
        while True:
            self.process_request_thread(request, client_address)
            with self._pool_lock:
                self._idle += 1
            item = self._work.get()
            if item is None:
                return
            request, client_address = item

    def server_close(self):
        super().server_close()
        for _ in range(self._pool_threads):
            self._work.put(None)

    def handle_error(self, request, client_address):
        log.debug("%s: error serving %s", self.role, client_address, exc_info=True)


class BlobStore:
    """Just enough Azure blob semantics for the status blob: Block and Page blobs with SAS."""

    def __init__(self):
        self.lock = threading.Lock()
        self.blobs = {}

    def put(self, path, query, headers, body):
        """Returns (status, error message or None, full content after the write or None)."""
        comp = query.get("comp")
        with self.lock:
            if comp == "page":
                blob = self.blobs.get(path)
                if blob is None or blob["type"] != "PageBlob":
                    return 404, "BlobNotFound: page write to a blob that is not a page blob", None
                m = re.match(r"^bytes=(\d+)-(\d+)$", headers.get("x-ms-range", ""))
                if not m:
                    return 400, "InvalidHeaderValue: x-ms-range", None
                start, end = int(m.group(1)), int(m.group(2))
                if headers.get("x-ms-page-write", "").lower() != "update":
                    return 400, "InvalidHeaderValue: x-ms-page-write must be update", None
                if start % 512 or (end + 1) % 512 or end < start or end + 1 > len(blob["data"]):
                    return 416, "InvalidPageRange", None
                if end - start + 1 != len(body) or len(body) > MAX_PAGE_WRITE:
                    return 400, "InvalidHeaderValue: range does not match the body or is over 4 MiB", None
                blob["data"][start:end + 1] = body
                return 201, None, bytes(blob["data"])
            blob_type = headers.get("x-ms-blob-type")
            if blob_type == "BlockBlob":
                self.blobs[path] = {"type": "BlockBlob", "data": bytearray(body)}
                return 201, None, bytes(body)
            if blob_type == "PageBlob":
                if body:
                    return 400, "InvalidHeaderValue: a page blob is created empty", None
                try:
                    size = int(headers.get("x-ms-blob-content-length", ""))
                except ValueError:
                    return 400, "MissingRequiredHeader: x-ms-blob-content-length", None
                if size % 512 or not 0 <= size <= MAX_PAGE_BLOB:
                    return 400, "InvalidHeaderValue: x-ms-blob-content-length must be a multiple of 512", None
                self.blobs[path] = {"type": "PageBlob", "data": bytearray(size)}
                return 201, None, None
            return 400, "MissingRequiredHeader: x-ms-blob-type", None

    def get(self, path):
        with self.lock:
            blob = self.blobs.get(path)
            return None if blob is None else (blob["type"], bytes(blob["data"]))


class Emulator:
    def __init__(self, source, fault_spec=None, bind="127.0.0.1", ports=None, advertise=None):
        """source: a platform.Platform or a replay.Replay."""
        self.source = source
        self.faults = faults.FaultScript(fault_spec)
        self.ledger = receipts.Ledger()
        self.blobs = BlobStore()
        self.bind = bind
        self.advertise = advertise
        self.ports_wanted = dict({"wireserver": 0, "hostgaplugin": 0, "imds": 0}, **(ports or {}))
        self.req_lock = threading.Lock()
        self.recent = collections.deque(maxlen=RECENT_REQUESTS)
        self.by_endpoint = collections.Counter()
        self.request_seq = 0
        self.latest_status = None
        self.servers = {}
        self.threads = []

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self):
        for role in ("wireserver", "hostgaplugin", "imds"):
            self.servers[role] = _Server((self.bind, int(self.ports_wanted[role])), self, role)
        local = self.bind if self.bind not in ("0.0.0.0", "", "::") else "127.0.0.1"
        self.local_urls = {r: "http://%s:%d" % (local, s.server_address[1]) for r, s in self.servers.items()}
        if self.advertise:
            adv = {"wireserver": "http://%s:80" % self.advertise, "hostgaplugin": "http://%s:32526" % self.advertise,
                   "imds": "http://%s:80" % self.advertise}
        else:
            adv = dict(self.local_urls)
        self.advertised_urls = adv
        self.source.set_urls(adv["wireserver"], adv["hostgaplugin"], adv["imds"])
        for role, srv in self.servers.items():
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, name=role, daemon=True)
            t.start()
            self.threads.append(t)
        return self.announcement()

    def announcement(self):
        out = {"event": "listening", "bind": self.bind, "mode": self.source.mode}
        for role, srv in self.servers.items():
            out["%s_port" % role] = srv.server_address[1]
            out["%s_url" % role] = self.local_urls[role]
        out["advertised"] = self.advertised_urls
        out["state_url"] = self.local_urls["wireserver"] + "/_emulator/state"
        return out

    def stop(self):
        for srv in self.servers.values():
            srv.shutdown()
            srv.server_close()

    # --- expectations for validation ---------------------------------------------------------------

    def expect(self):
        ident = self.source.identity()
        return {"container_id": ident["container_id"], "role_instance_id": ident["role_instance_id"],
                "config_name": ident["config_name"], "incarnations": ident["incarnations"]}

    # --- the request path -------------------------------------------------------------------------------

    def handle(self, h, method):
        started = time.monotonic()
        role = h.server.role
        parts = urlsplit(h.path)
        path = parts.path
        query = {k.lower(): v for k, v in parse_qsl(parts.query, keep_blank_values=True)}
        headers = {k.lower(): v for k, v in h.headers.items()}
        fault = None
        endpoint = None
        try:
            if role == "wireserver" and path.startswith("/_emulator/"):
                endpoint = "control"
                body = self._read_body(h, method, CAP_CONTROL)
                resp = self.control(method, path, query, body)
            else:
                endpoint, func, cap = self.route(role, method, path, query)
                body = self._read_body(h, method, cap) if func else b""
                fault = self.faults.next(endpoint) if endpoint else None
                if fault is not None:
                    resp = self._pre_fault(h, fault)
                    if resp == "reset":
                        self._log(role, method, h.path, endpoint, 0, headers, fault, started)
                        return
                else:
                    resp = None
                if resp is None:
                    resp = func(method, path, query, headers, body) if func else Response(
                        404, _error_xml("ResourceNotFound", "no such resource"))
        except RequestTooLarge as e:
            h.close_connection = True
            resp = Response(413, _error_xml("RequestBodyTooLarge", str(e)))
        except _Reject as e:
            self.ledger.add("rejected", False, [e.message], None, endpoint=endpoint, path=_redact(h.path))
            resp = Response(e.status, _error_xml(e.code, e.message))
        except Exception as e:  # the emulator must answer, and say what went wrong
            log.exception("error handling %s %s", method, h.path)
            resp = Response(500, _error_xml("InternalError", "%s: %s" % (type(e).__name__, e)))
        # Counted before the answer leaves: a client on a kept connection may ask the emulator
        # for its counts the moment it has read the answer.
        self._log(role, method, h.path, endpoint, resp.status, headers, fault, started)
        self._send(h, method, resp, fault)

    def _read_body(self, h, method, cap):
        if method not in ("POST", "PUT"):
            return b""
        length = h.headers.get("Content-Length")
        if length is None:
            if h.headers.get("Transfer-Encoding"):
                h.close_connection = True
                raise _Reject(411, "LengthRequired", "chunked bodies are not accepted; send Content-Length")
            return b""
        try:
            n = int(length)
        except ValueError:
            h.close_connection = True
            raise _Reject(400, "InvalidHeaderValue", "Content-Length")
        if n > cap:
            raise RequestTooLarge("body of %d bytes is over the %d-byte limit" % (n, cap))
        chunks, left = [], n
        while left:
            chunk = h.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _pre_fault(self, h, fault):
        kind = fault["kind"]
        if kind == "reset":
            try:
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.connection.close()
            except OSError:
                pass
            h.close_connection = True
            return "reset"
        if kind == "delay":
            time.sleep(float(fault.get("seconds", 1)))
            return None
        if kind == "status":
            hdrs = [("Retry-After", str(fault["retry_after"]))] if "retry_after" in fault else []
            return Response(fault["code"], fault.get("body", _error_xml("EmulatedFault", "scripted %d" % fault["code"])),
                            headers=hdrs)
        if kind == "throttle":
            return Response(429, _error_xml("TooManyRequests", "scripted throttling"),
                            headers=[("Retry-After", str(fault.get("retry_after", 1)))])
        if kind == "gone":
            return Response(410, _error_xml("ResourceGone", "scripted: the resource is gone"))
        if kind == "invalid_container":
            return Response(400, _error_xml("InvalidContainerConfiguration",
                                            "InvalidContainerConfiguration: scripted"))
        return None  # body faults apply on the way out

    def _send(self, h, method, resp, fault):
        body = resp.body
        kind = fault["kind"] if fault else None
        send_length = True
        if kind == "malformed_xml":
            body = body[:max(1, len(body) // 2)] + b"<Broken attr='\n"
        elif kind == "entity_bomb":
            body = faults.ENTITY_BOMB.encode()
            resp.ctype = XML
        elif kind == "oversized":
            target = int(fault["bytes"])
            send_length = fault.get("content_length", True)
        try:
            h.send_response(resp.status)
            h.send_header("Content-Type", resp.ctype)
            for k, v in resp.headers:
                h.send_header(k, v)
            if kind == "oversized":
                if send_length:
                    h.send_header("Content-Length", str(max(target, len(body))))
                else:
                    h.close_connection = True
            else:
                h.send_header("Content-Length", str(len(body)))
            if h.close_connection:
                h.send_header("Connection", "close")
            h.end_headers()
            if method == "HEAD":
                return
            if kind == "oversized":
                h.wfile.write(body)
                pad = max(0, target - len(body))
                block = b" " * 65536
                while pad > 0:
                    h.wfile.write(block[:min(pad, len(block))])
                    pad -= len(block)
            elif kind == "slow_body":
                bps = max(1, int(fault.get("bytes_per_second", 100)))
                step = max(1, bps // 10)
                for i in range(0, len(body), step):
                    h.wfile.write(body[i:i + step])
                    h.wfile.flush()
                    time.sleep(step / bps)
            else:
                h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _log(self, role, method, raw_path, endpoint, status, headers, fault, started):
        keep = {k: (v if len(v) <= 80 else v[:40] + "...(%d chars)" % len(v)) for k, v in headers.items()
                if k.startswith("x-ms-") or k in ("user-agent", "content-type", "connection", "metadata",
                                                   "if-none-match")}
        with self.req_lock:
            self.request_seq += 1
            self.by_endpoint[endpoint or "unrouted"] += 1
            if endpoint != "control":
                self.recent.append({
                    "seq": self.request_seq, "server": role, "method": method, "path": _redact(raw_path),
                    "endpoint": endpoint, "status": status, "headers": keep,
                    "fault": fault["kind"] if fault else None,
                    "ms": round((time.monotonic() - started) * 1000, 1)})

    # --- routing -------------------------------------------------------------------------------------

    def route(self, role, method, path, query):
        """(endpoint name for faults and counts, handler function or None, body cap)."""
        if role == "wireserver":
            if path.startswith("/storage/"):
                return self._route_storage(method, path)
            if path.startswith("/metadata/") and method == "GET":
                # The platform answers IMDS on the WireServer address too; waagent falls back to it.
                return "imds", self.imds, 0
            comp = query.get("comp")
            if path == "/HealthService" and method == "POST":
                return "HealthService", self.ws_health_service, CAP_WS_POST
            if method == "GET" and comp == "versions" and path in ("/", ""):
                return "versions", self.ws_versions, 0
            if path in ("/machine", "/machine/"):
                if method == "GET" and comp == "goalstate":
                    return "goalstate", self.ws_goal_state, 0
                if method == "POST" and (comp or "").lower() in ("health", "roleproperties", "telemetrydata"):
                    name = {"health": "health", "roleproperties": "roleProperties",
                            "telemetrydata": "telemetrydata"}[comp.lower()]
                    return name, getattr(self, "ws_" + name.lower()), CAP_WS_POST
            if path.startswith("/machine/") and method == "GET":
                if comp == "config" and query.get("type") in ("hostingEnvironmentConfig", "sharedConfig",
                                                              "extensionsConfig", "fullConfig"):
                    return query["type"], self.ws_config, 0
                if comp == "certificates":
                    return "certificates", self.ws_certificates, 0
            return None, None, 0
        if role == "hostgaplugin":
            name = {"/versions": ("GET", self.hgap_versions, 0), "/health": ("GET", self.hgap_health, 0),
                    "/extensionArtifact": ("GET", self.hgap_artifact, 0),
                    "/status": ("PUT", self.hgap_status, CAP_HGAP_STATUS),
                    "/vmAgentLog": ("PUT", self.hgap_log, CAP_LOG_UPLOAD),
                    "/vmSettings": ("GET", self.hgap_vm_settings, 0)}.get(path)
            if name and name[0] == method:
                return "hgap_" + path[1:], name[1], name[2]
            return None, None, 0
        if role == "imds":
            if path.startswith("/metadata/") and method == "GET":
                return "imds", self.imds, 0
            return None, None, 0
        return None, None, 0

    def _route_storage(self, method, path):
        status_path = self.source.status_blob_path()
        if status_path and path == status_path and method in ("PUT", "GET", "HEAD"):
            return "storage_status", self.storage_status, CAP_STATUS_BLOB
        if method in ("GET", "HEAD"):
            if path.endswith("/manifest.xml"):
                return "storage_manifest", self.storage_get, 0
            if path.startswith("/storage/packages/"):
                return "storage_package", self.storage_get, 0
            return "storage_other", self.storage_get, 0
        return None, None, 0

    # --- WireServer -------------------------------------------------------------------------------------

    def _check_ws_headers(self, headers):
        if headers.get("x-ms-agent-name") != "WALinuxAgent":
            raise _Reject(400, "MissingOrInvalidRequiredHeader", "x-ms-agent-name must be WALinuxAgent")
        if headers.get("x-ms-version") != documents.WS_VERSION:
            raise _Reject(400, "MissingOrInvalidRequiredHeader", "x-ms-version must be %s" % documents.WS_VERSION)

    def ws_versions(self, method, path, query, headers, body):
        return Response(200, documents.versions())

    def ws_goal_state(self, method, path, query, headers, body):
        self._check_ws_headers(headers)
        return Response(200, self.source.current().goal_state)

    def _snapshot_for(self, query):
        inc = query.get("incarnation")
        snap = self.source.current()
        if inc is None or inc == str(snap.incarnation):
            return snap
        old = self.source.snapshot(inc)
        if old is None:
            raise _Reject(410, "ResourceGone", "incarnation %s is no longer served" % inc)
        return old

    def ws_config(self, method, path, query, headers, body):
        self._check_ws_headers(headers)
        snap = self._snapshot_for(query)
        doc = {"hostingEnvironmentConfig": snap.hosting_env, "sharedConfig": snap.shared_config,
               "extensionsConfig": snap.extensions_config, "fullConfig": snap.hosting_env}[query["type"]]
        if doc is None:
            return Response(404, _error_xml("ResourceNotFound", "no %s in this goal state" % query["type"]))
        return Response(200, doc)

    def ws_certificates(self, method, path, query, headers, body):
        self._check_ws_headers(headers)
        raw = headers.get("x-ms-guest-agent-public-x509-cert")
        if not raw:
            raise _Reject(400, "MissingRequiredHeader", "x-ms-guest-agent-public-x509-cert is required")
        try:
            transport = x509.load_der_x509_certificate(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError) as e:
            raise _Reject(400, "InvalidHeaderValue", "x-ms-guest-agent-public-x509-cert is not a base64 DER "
                                                     "certificate: %s" % e)
        if not isinstance(transport.public_key(), rsa.RSAPublicKey):
            raise _Reject(400, "InvalidHeaderValue", "the transport certificate must carry an RSA key")
        cipher = headers.get("x-ms-cipher-name")
        if cipher not in cms.CIPHERS:
            raise _Reject(400, "InvalidHeaderValue", "x-ms-cipher-name must be one of %s" % sorted(cms.CIPHERS))
        snap = self._snapshot_for(query)
        if getattr(snap, "certificates_verbatim", None) is not None:
            return Response(200, snap.certificates_verbatim)
        data = None
        if snap.pfx is not None:
            data = base64.b64encode(cms.envelope(snap.pfx, transport, cipher=cipher)).decode()
        return Response(200, documents.certificates(snap.incarnation, data))

    def _record(self, kind, validator, body, headers, **extra):
        errors, warnings, doc = validator(body, headers, self.expect())
        self.ledger.add(kind, not errors, errors, doc, warnings=warnings, **extra)

    def ws_health(self, method, path, query, headers, body):
        self._check_ws_headers(headers)
        self._record("health", receipts.health, body, headers)
        return Response(200, b"")

    def ws_roleproperties(self, method, path, query, headers, body):
        self._check_ws_headers(headers)
        self._record("role_properties", receipts.role_properties, body, headers)
        return Response(202, b"")

    def ws_telemetrydata(self, method, path, query, headers, body):
        self._check_ws_headers(headers)
        self._record("telemetry", receipts.telemetry, body, headers, bytes=len(body))
        return Response(200, b"")

    def ws_health_service(self, method, path, query, headers, body):
        self._record("health_service", receipts.health_service, body, headers)
        return Response(200, b"")

    # --- storage -------------------------------------------------------------------------------------

    def storage_status(self, method, path, query, headers, body, channel="direct"):
        if query.get("sig") != self.source.status_blob_sig():
            return Response(403, _error_xml("AuthenticationFailed", "Signature did not match"))
        if method in ("GET", "HEAD"):
            got = self.blobs.get(path)
            if got is None:
                return Response(404, _error_xml("BlobNotFound", "The specified blob does not exist."))
            return Response(200, got[1], "application/octet-stream")
        status, err, content = self.blobs.put(path, query, headers, body)
        if err:
            self.ledger.add("status", False, [err], None, channel=channel)
            return Response(status, _error_xml(err.split(":")[0], err))
        if content is not None:
            errors, warnings, doc = receipts.status_blob(content)
            blob_type = self.blobs.get(path)[0]
            self.ledger.add("status", not errors, errors, doc, channel=channel, blob_type=blob_type,
                            bytes=len(content))
            if not errors:
                self.latest_status = {"channel": channel, "blob_type": blob_type, "document": doc}
        return Response(201, b"", headers=[("x-ms-request-server-encrypted", "true")])

    def storage_get(self, method, path, query, headers, body):
        data, ctype = self.source.storage_object(path)
        if data is None:
            return Response(404, _error_xml("BlobNotFound", "The specified blob does not exist."))
        return Response(200, data, ctype)

    # --- HostGAPlugin --------------------------------------------------------------------------------

    def _check_hgap(self, headers, config_name=True):
        if headers.get("x-ms-version") != documents.HGAP_VERSION:
            raise _Reject(400, "MissingOrInvalidRequiredHeader", "x-ms-version must be %s" % documents.HGAP_VERSION)
        ident = self.source.identity()
        cid = headers.get("x-ms-containerid")
        if not cid:
            raise _Reject(400, "MissingRequiredHeader", "x-ms-containerid is required")
        if cid != ident["container_id"]:
            raise _Reject(400, "InvalidContainerConfiguration",
                          "InvalidContainerConfiguration: x-ms-containerid does not match this VM")
        if config_name:
            name = headers.get("x-ms-host-config-name")
            if not name:
                raise _Reject(400, "MissingRequiredHeader", "x-ms-host-config-name is required")
            if name not in ident["config_names"]:
                raise _Reject(410, "ResourceGone", "x-ms-host-config-name is stale; refresh the goal state")

    def hgap_versions(self, method, path, query, headers, body):
        if not headers.get("x-ms-containerid"):
            raise _Reject(400, "MissingRequiredHeader", "x-ms-containerid is required")
        return Response(200, json.dumps([documents.HGAP_VERSION, "2012-11-30"]), JSON)

    def hgap_health(self, method, path, query, headers, body):
        return Response(200, b"")

    def hgap_artifact(self, method, path, query, headers, body):
        self._check_hgap(headers)
        loc = headers.get("x-ms-artifact-location")
        if not loc:
            raise _Reject(400, "MissingRequiredHeader", "x-ms-artifact-location is required")
        # only the emulator's own storage is ever read: the URL's host is not contacted
        target = urlsplit(loc).path
        data, ctype = self.source.storage_object(target) if target.startswith("/storage/") else (None, None)
        if data is None:
            return Response(404, _error_xml("BlobNotFound", "artifact not found upstream"))
        return Response(200, data, ctype)

    def hgap_status(self, method, path, query, headers, body):
        self._check_hgap(headers)
        try:
            req = json.loads(body.decode("utf-8"))
            content = base64.b64decode(req["content"], validate=True)
            blob_headers = {h["headerName"].lower(): h["headerValue"] for h in req["headers"]}
            uri = urlsplit(req["requestUri"])
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
            self.ledger.add("status", False, ["HostGAPlugin /status body malformed: %s" % e], None, channel="hgap")
            return Response(400, _error_xml("InvalidRequest", "malformed status relay body"))
        if uri.path != self.source.status_blob_path():
            self.ledger.add("status", False, ["requestUri %s is not the status blob" % _redact(uri.path)], None,
                            channel="hgap")
            return Response(502, _error_xml("UpstreamFailure", "storage rejected the request"))
        q = {k.lower(): v for k, v in parse_qsl(uri.query, keep_blank_values=True)}
        resp = self.storage_status("PUT", uri.path, q, blob_headers, content, channel="hgap")
        if resp.status != 201:
            return Response(502, _error_xml("UpstreamFailure", "storage answered %d" % resp.status))
        return Response(200, b"")

    def hgap_log(self, method, path, query, headers, body):
        if headers.get("x-ms-version") != documents.HGAP_VERSION:
            raise _Reject(400, "MissingOrInvalidRequiredHeader", "x-ms-version must be %s" % documents.HGAP_VERSION)
        self._record("log_upload", receipts.log_upload, body, headers)
        return Response(200, b"")

    def hgap_vm_settings(self, method, path, query, headers, body):
        self._check_hgap(headers)
        snap = self.source.current()
        if snap.vm_settings is None:
            return Response(404, _error_xml("ResourceNotFound", "vmSettings not supported"))
        if headers.get("if-none-match") == snap.etag:
            return Response(304, b"", JSON, headers=[("ETag", snap.etag)])
        return Response(200, snap.vm_settings, JSON, headers=[("ETag", snap.etag)])

    # --- IMDS ----------------------------------------------------------------------------------------

    def imds(self, method, path, query, headers, body):
        if headers.get("metadata", "").lower() != "true":
            return _json({"error": "Bad request. Required metadata header not specified"}, 400)
        if "api-version" not in query:
            return _json({"error": "Bad request. api-version was not specified in the request. For more "
                                   "information refer to aka.ms/azureimds", "newest-versions": ["2021-02-01"]}, 400)
        doc = self.source.imds_instance()
        p = path.rstrip("/")
        if p == "/metadata/instance":
            return _json(doc)
        if p.startswith("/metadata/instance/"):
            node = doc
            for part in p[len("/metadata/instance/"):].split("/"):
                if not isinstance(node, dict) or part not in node:
                    return _json({"error": "Not found"}, 404)
                node = node[part]
            return _json(node)
        return _json({"error": "Not found"}, 404)

    # --- the control API --------------------------------------------------------------------------------

    def state(self, since=0):
        received, counts = self.ledger.dump(since)
        with self.req_lock:
            recent = list(self.recent)[-100:]
            by_endpoint = dict(self.by_endpoint)
        return {
            "emulator": self.announcement(),
            "vm": self.source.describe(),
            "received": received,
            "counts": counts,
            "latest_status": self.latest_status,
            "requests": {"by_endpoint": by_endpoint, "recent": recent},
            "faults": {"pending": self.faults.pending(), "fired": list(self.faults.fired)},
        }

    def control(self, method, path, query, body):
        parts = [unquote(p) for p in path[len("/_emulator/"):].split("/") if p]
        try:
            spec = json.loads(body.decode("utf-8")) if body else {}
        except ValueError:
            return _json({"error": "body is not JSON"}, 400)
        try:
            if method == "GET":
                if parts == ["state"]:
                    return _json(self.state(int(query.get("since", 0))))
                if parts == ["requests"]:
                    with self.req_lock:
                        return _json({"recent": list(self.recent)})
                if parts == ["certificates"]:
                    return _json({"certificates": self.source.export_certificates()})
                if parts == ["status"]:
                    return _json({"latest_status": self.latest_status})
                return _json({"error": "unknown control resource"}, 404)
            if method == "POST" and parts == ["faults"]:
                self.faults.replace(spec, append=query.get("append") in ("1", "true"))
                return _json({"pending": self.faults.pending()})
            if method == "POST" and parts == ["reset"]:
                self.ledger.clear()
                with self.req_lock:
                    self.recent.clear()
                    self.by_endpoint.clear()
                self.latest_status = None
                return _json({"ok": True})
            change = self.source.change
            if method == "POST" and parts == ["extensions"]:
                result = change("upsert_extension", spec)
            elif method == "POST" and len(parts) == 3 and parts[0] == "extensions" and parts[2] in (
                    "enable", "disable", "uninstall"):
                result = change("set_extension_state", parts[1], {"enable": "enabled", "disable": "disabled",
                                                                  "uninstall": "uninstall"}[parts[2]])
            elif (method == "POST" and len(parts) == 3 and parts[0] == "extensions" and parts[2] == "remove") or \
                    (method == "DELETE" and len(parts) == 2 and parts[0] == "extensions"):
                result = change("remove_extension", parts[1])
            elif method == "POST" and len(parts) == 3 and parts[0] == "certificates" and parts[2] == "rotate":
                old, new = change("rotate_certificate", parts[1])
                result = {"old_thumbprint": old, "new_thumbprint": new}
            elif method == "POST" and parts == ["hibernate-resume"]:
                result = {"thumbprints": change("hibernate_resume")}
            elif method == "POST" and parts == ["hostname"]:
                result = change("set_hostname", spec["hostname"])
            elif method == "POST" and parts == ["incarnation"]:
                result = change("bump")
            else:
                return _json({"error": "unknown control resource"}, 404)
        except KeyError as e:
            return _json({"error": "not found: %s" % e}, 404)
        except ReadOnlyReplay as e:
            return _json({"error": str(e)}, 409)
        except (ValueError, TypeError) as e:
            return _json({"error": str(e)}, 400)
        return _json({"ok": True, "result": _jsonable(result), "vm": self.source.describe()})


class _Reject(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _redact(path):
    return _SIG_RE.sub(r"\1***", path)


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return None
