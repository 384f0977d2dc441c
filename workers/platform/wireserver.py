"""The WireServer client (protocol.md §1.3-§1.11, §1.13): versions, goal state and its
documents, Certificates, health, role properties, telemetry, HealthService.

URLs taken from a goal state are followed only when they name the WireServer this client talks
to (scheme http, same host and port): a document cannot send the agent elsewhere, and a
recorded goal state whose hosts were not rewritten fails loudly instead of reaching them.
"""

import logging
import time
from typing import Callable, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from workers.platform import documents, reports
from workers.platform.certificate_records import CIPHERS, CertificateRecord
from workers.platform.endpoint import Endpoint
from workers.platform.errors import (CertificateError, DocumentError, HttpError,
                                     InvalidContainerError, NoRoleInstanceError,
                                     ResourceGoneError)
from workers.platform.extensionsconfig import ExtensionsConfig, parse_extensions_config
from workers.platform.goalstate import GoalState, parse_goal_state
from workers.platform.http import HttpClient, RetryPolicy
from workers.platform.identity import AGENT_NAME, WIRE_PROTOCOL_VERSION
from redaction import redact_sas

log = logging.getLogger(__name__)

XML_CONTENT_TYPE = "text/xml;charset=utf-8"
TELEMETRY_ATTEMPTS = 3
# The telemetry endpoint allows 15 calls in 15 s: waagent waits 8 s when throttled, that is
# 8 x Protocol.ThrottleDelay at its default of 1 s.
TELEMETRY_THROTTLE_FACTOR = 8.0


class WireServerClient:
    def __init__(self, http: HttpClient, endpoint: Endpoint, config,
                 sleep: Callable[[float], None] = time.sleep):
        self.http = http
        self.endpoint = endpoint
        self.config = config
        self._sleep = sleep
        # The last goal state's bytes and what they parsed to: the extensions worker fetches
        # it every poll and it rarely changes; parsing it again cost more guest CPU than the
        # request under QEMU (issue 17). GoalState is frozen, so sharing it is safe.
        self._parsed: Optional[Tuple[bytes, GoalState]] = None

    # -- plumbing --------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.endpoint.base_url + path

    @staticmethod
    def headers(extra: Optional[dict] = None) -> dict:
        headers = {"x-ms-agent-name": AGENT_NAME, "x-ms-version": WIRE_PROTOCOL_VERSION}
        headers.update(extra or {})
        return headers

    def check_url(self, url: str, document: str) -> str:
        """`url` when it names this WireServer; DocumentError otherwise."""
        try:
            parts = urlsplit(url)
            port = parts.port or 80
        except ValueError:
            raise DocumentError(document, "unreadable URL") from None
        if parts.scheme != "http" or (parts.hostname or "").lower() != \
                self.endpoint.host.lower() or port != self.endpoint.port:
            raise DocumentError(document, "URL %s is not on the WireServer %s"
                                % (redact_sas(url.split("?", 1)[0]), self.endpoint))
        return url

    def _get(self, url: str, headers: Optional[dict] = None,
             policy: Optional[RetryPolicy] = None) -> bytes:
        return self.http.request("GET", url, headers=headers if headers is not None
                                 else self.headers(), policy=policy).body

    def _post(self, url: str, body: bytes, content_type: str = XML_CONTENT_TYPE,
              policy: Optional[RetryPolicy] = None, headers: Optional[dict] = None):
        sent = self.headers({"Content-Type": content_type})
        sent.update(headers or {})
        return self.http.request("POST", url, headers=sent, body=body, policy=policy)

    # -- documents -------------------------------------------------------------------------

    def versions(self) -> documents.Versions:
        """GET /?comp=versions, sent without the x-ms headers (as waagent does)."""
        return documents.parse_versions(self._get(self.url("/?comp=versions"), headers={}))

    def goal_state(self) -> GoalState:
        """The goal state; refetched while it has no RoleInstance (Protocol.GoalStateRetries)."""
        retries = self.config["Protocol.GoalStateRetries"]
        delay = self.config["Protocol.GoalStateRetryDelay"]
        for attempt in range(1, retries + 1):
            data = self._get(self.url("/machine/?comp=goalstate"))
            if self._parsed is not None and self._parsed[0] == data:
                return self._parsed[1]
            try:
                goal_state = parse_goal_state(data)
                self._parsed = (data, goal_state)
                return goal_state
            except NoRoleInstanceError:
                if attempt == retries:
                    raise
                log.info("goal state has no RoleInstance yet; refetching (%d of %d)",
                         attempt + 1, retries)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def hosting_environment(self, goal_state: GoalState) -> Optional[documents.HostingEnvironment]:
        if not goal_state.hosting_environment_url:
            return None
        url = self.check_url(goal_state.hosting_environment_url, "HostingEnvironmentConfig")
        return documents.parse_hosting_environment(self._get(url))

    def shared_config(self, goal_state: GoalState) -> Optional[documents.SharedConfig]:
        if not goal_state.shared_config_url:
            return None
        url = self.check_url(goal_state.shared_config_url, "SharedConfig")
        return documents.parse_shared_config(self._get(url))

    def extensions_config(self, goal_state: GoalState) -> Optional[ExtensionsConfig]:
        if not goal_state.extensions_config_url:
            return None
        url = self.check_url(goal_state.extensions_config_url, "ExtensionsConfig")
        return parse_extensions_config(self._get(url))

    def certificates(self, goal_state: GoalState,
                     creds: "TransportCredentials") -> List[CertificateRecord]:
        """The tenant certificates: AES128_CBC asked first, DES_EDE3_CBC when that fails.
        (cryptography loads here: a worker that never decrypts never maps it.)"""
        from workers.platform.certificates import decrypt_certificates
        if not goal_state.certificates_url:
            return []
        url = self.check_url(goal_state.certificates_url, "Certificates")
        failures = []
        for cipher in CIPHERS:
            headers = self.headers({"x-ms-cipher-name": cipher,
                                    "x-ms-guest-agent-public-x509-cert": creds.header_value})
            try:
                envelope = documents.parse_certificate_file(self._get(url, headers=headers))
                if envelope.data is None:
                    return []
                if envelope.format != documents.PKCS7_PFX_FORMAT:
                    log.warning("Certificates format %r is not %s; ignored",
                                envelope.format, documents.PKCS7_PFX_FORMAT)
                    return []
                return decrypt_certificates(envelope.data, creds)
            except (HttpError, DocumentError, CertificateError) as e:
                if isinstance(e, (ResourceGoneError, InvalidContainerError)):
                    raise
                failures.append("%s: %s" % (cipher, e))
                log.warning("Certificates with %s failed: %s", cipher, e)
        raise CertificateError("Certificates could not be fetched and decrypted: %s"
                               % "; ".join(failures))

    # -- reports ---------------------------------------------------------------------------

    def report_health(self, goal_state: GoalState, state: str, substatus: Optional[str] = None,
                      description: Optional[str] = None) -> None:
        body = reports.health_report(goal_state.incarnation, goal_state.container_id,
                                     goal_state.role_instance_id, state, substatus, description)
        policy = self.http.policy(attempts=self.config["Protocol.HealthReportAttempts"],
                                  retry_delay=self.config["Protocol.HealthReportRetryDelay"])
        self._post(self.url("/machine?comp=health"), body, policy=policy)

    def report_role_properties(self, goal_state: GoalState, thumbprint: str) -> None:
        body = reports.role_properties(goal_state.container_id, goal_state.role_instance_id,
                                       thumbprint)
        response = self._post(self.url("/machine?comp=roleProperties"), body)
        if response.status != 202:
            log.info("roleProperties answered %d (202 expected)", response.status)

    def send_telemetry(self, events: Sequence[reports.TelemetryEvent]) -> int:
        """Posts the events (one request per provider and 64512 bytes); returns the requests."""
        policy = self.http.policy(attempts=TELEMETRY_ATTEMPTS,
                                  throttle_delay=TELEMETRY_THROTTLE_FACTOR
                                  * self.config["Protocol.ThrottleDelay"],
                                  grow_when_throttled=False)
        sent = 0
        for body in reports.telemetry_bodies(events):
            self._post(self.url("/machine?comp=telemetrydata"), body, policy=policy)
            sent += 1
        return sent

    def report_health_service(self, observations: Sequence[reports.Observation]) -> None:
        body = reports.health_service_report(observations)
        self.http.request("POST", self.url("/HealthService"), body=body,
                          headers={"Content-Type": "application/json"})
