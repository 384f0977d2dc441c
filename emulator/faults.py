"""Scripted faults: per endpoint, a sequence of what the next requests get instead of (or before)
the normal answer.

A sequence item is "ok" or an object with "kind" and an optional "repeat" (default 1):
  {"kind": "status", "code": 500, "body": "...", "retry_after": 5}   any status, optional Retry-After
  {"kind": "throttle", "retry_after": 2}                              429 + Retry-After
  {"kind": "gone"}                                                    410
  {"kind": "invalid_container"}                                       400 InvalidContainerConfiguration
  {"kind": "delay", "seconds": 1.5}                                   wait, then the normal answer
  {"kind": "reset"}                                                   TCP RST, no response
  {"kind": "slow_body", "bytes_per_second": 200}                      normal answer, trickled
  {"kind": "oversized", "bytes": 20000000, "content_length": true}    normal body padded to N bytes
  {"kind": "malformed_xml"}                                           truncated document
  {"kind": "entity_bomb"}                                             billion-laughs XML
"""
import threading

KINDS = {"ok", "status", "throttle", "gone", "invalid_container", "delay", "reset", "slow_body", "oversized",
         "malformed_xml", "entity_bomb"}

ENDPOINTS = {
    "versions", "goalstate", "hostingEnvironmentConfig", "sharedConfig", "extensionsConfig", "fullConfig",
    "certificates", "health", "roleProperties", "telemetrydata", "HealthService",
    "storage_status", "storage_manifest", "storage_package", "storage_other",
    "hgap_versions", "hgap_health", "hgap_extensionArtifact", "hgap_status", "hgap_vmAgentLog", "hgap_vmSettings",
    "imds",
}

MAX_OVERSIZED = 1 << 30

ENTITY_BOMB = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
               + "".join(' <!ENTITY lol%d "%s">\n' % (i, ("&lol%s;" % (i - 1 if i > 1 else "")) * 10)
                         for i in range(1, 10))
               + ']>\n<GoalState><Incarnation>&lol9;</Incarnation></GoalState>\n')


def _normalize(item):
    if item == "ok":
        return {"kind": "ok"}
    if isinstance(item, int):
        return {"kind": "status", "code": item}
    if not isinstance(item, dict) or item.get("kind") not in KINDS:
        raise ValueError("bad fault %r (kinds: %s)" % (item, ", ".join(sorted(KINDS))))
    item = dict(item)
    if item["kind"] == "status" and not isinstance(item.get("code"), int):
        raise ValueError("status fault needs an integer code")
    if item["kind"] == "oversized" and not 0 < int(item.get("bytes", 0)) <= MAX_OVERSIZED:
        raise ValueError("oversized fault needs 0 < bytes <= %d" % MAX_OVERSIZED)
    return item


class FaultScript:
    def __init__(self, spec=None):
        self.lock = threading.Lock()
        self.queues = {}
        self.fired = []
        if spec:
            self.replace(spec)

    def replace(self, spec, append=False):
        parsed = {}
        for endpoint, seq in spec.items():
            if endpoint not in ENDPOINTS:
                raise ValueError("unknown fault endpoint %r (endpoints: %s)" % (endpoint, ", ".join(sorted(ENDPOINTS))))
            if not isinstance(seq, list):
                raise ValueError("faults for %s must be a list" % endpoint)
            items = []
            for raw in seq:
                item = _normalize(raw)
                items.extend([item] * max(1, int(item.get("repeat", 1))))
            parsed[endpoint] = items
        with self.lock:
            if not append:
                self.queues = {}
            for endpoint, items in parsed.items():
                self.queues.setdefault(endpoint, []).extend(items)

    def next(self, endpoint):
        """The fault for this request to `endpoint`, or None for the normal answer."""
        if not self.queues:
            return None
        with self.lock:
            q = self.queues.get(endpoint)
            if not q:
                return None
            item = q.pop(0)
            if not q:
                del self.queues[endpoint]
            if item["kind"] == "ok":
                return None
            self.fired.append({"endpoint": endpoint, "kind": item["kind"]})
            del self.fired[:-1000]
            return item

    def pending(self):
        with self.lock:
            return {k: [dict(i) for i in v] for k, v in self.queues.items()}
