"""PlatformClient: the one object a worker uses to talk to the platform.

It finds the WireServer, keeps the latest goal state (and with it the HostGAPlugin's container
headers), refreshes it once when a request says it is stale (410 / InvalidContainer), and
sends reports. See workers/platform/__init__.py for the API in one page.
"""

import logging
import os
import random
import time
from typing import Callable, List, NamedTuple, Optional, Sequence, Union

from workers.platform.certificate_records import CertificateRecord
from workers.platform import endpoint as discovery
from workers.platform import reports
from workers.platform.documents import HostingEnvironment, SharedConfig
from workers.platform.endpoint import Endpoint
from workers.platform.errors import (CertificateError, DocumentError, HttpError,
                                     InvalidContainerError,
                                     PlatformError, ProtocolNotFoundError, ResourceGoneError)
from workers.platform.extensionsconfig import ExtensionsConfig
from workers.platform.goalstate import GoalState
from workers.platform.hostplugin import HostPluginClient, VmSettings
from workers.platform.http import HttpClient
from workers.platform.identity import WIRE_PROTOCOL_VERSION
from workers.platform.imds import ImdsClient, endpoint_from_config
from redaction import redact_sas
from workers.platform.wireserver import WireServerClient

log = logging.getLogger(__name__)

STALE = (ResourceGoneError, InvalidContainerError)


class FullGoalState(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    """A goal state with the documents it names (None where it names none)."""
    goal_state: GoalState
    hosting_environment: Optional[HostingEnvironment]
    shared_config: Optional[SharedConfig]
    extensions_config: Optional[ExtensionsConfig]

    @property
    def incarnation(self) -> str:
        return self.goal_state.incarnation


# TransportCredentials (workers/platform/certificates.py) is named, not imported: cryptography
# loads only in a worker that decrypts (issue 17).
TransportSource = Union["TransportCredentials", Callable[[], "TransportCredentials"], None]


def _from_broker(worker):
    from workers.platform.certificates import from_broker
    return from_broker(worker)


class PlatformClient:
    """`state_dir`: the calling worker's own folder (0700), where the detected endpoint is
    remembered; None remembers nothing. `transport`: the transport pair, or what fetches it
    when Certificates first need it; None for a client that never decrypts."""

    def __init__(self, config, http: Optional[HttpClient] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 state_dir: Optional[str] = None, transport: TransportSource = None):
        self.config = config
        self.http = http or HttpClient(config, sleep=sleep)
        self._sleep = sleep
        self.state_dir = state_dir
        self._endpoint: Optional[Endpoint] = None
        self._wire: Optional[WireServerClient] = None
        self._hostplugin: Optional[HostPluginClient] = None
        self._transport: Optional["TransportCredentials"] = None
        self._transport_source = None
        self.set_transport(transport)
        self.last_goal_state: Optional[GoalState] = None
        self._hgap_default_channel = False

    @classmethod
    def from_config(cls, config, state_dir: Optional[str] = None,
                    transport: TransportSource = None) -> "PlatformClient":
        return cls(config, state_dir=state_dir, transport=transport)

    @classmethod
    def for_worker(cls, worker, config) -> "PlatformClient":
        """The client of a running worker: its own state folder, and the transport key from
        the broker on first need (a verb only provisioning and extensions may call: any
        other worker that decrypts is ended for it)."""
        return cls(config, state_dir=os.path.join(config["Agent.StateDir"], worker.name),
                   transport=lambda: _from_broker(worker))

    def close(self) -> None:
        self.http.close()

    # -- endpoint ----------------------------------------------------------------------------

    def detect(self) -> Endpoint:
        """Probe the candidate endpoints until one speaks 2012-11-30 (protocol.md §1.1)."""
        attempts = self.config["Protocol.DetectionAttempts"]
        interval = self.config["Protocol.DetectionInterval"]
        skip_dhcp = False
        last = "no candidate"
        for attempt in range(1, attempts + 1):
            for candidate in discovery.candidates(self.config, skip_dhcp=skip_dhcp,
                                                  state_dir=self.state_dir):
                wire = WireServerClient(self.http, candidate, self.config, sleep=self._sleep)
                try:
                    versions = wire.versions()
                except (HttpError, DocumentError) as e:
                    last = "%s: %s" % (candidate, e)
                    skip_dhcp = True
                    continue
                if not versions.supports(WIRE_PROTOCOL_VERSION):
                    last = "%s does not support %s" % (candidate, WIRE_PROTOCOL_VERSION)
                    continue
                self._use_endpoint(candidate)
                if candidate.host != discovery.KNOWN_WIRESERVER_IP or candidate.port != 80:
                    log.info("WireServer endpoint %s (not the well-known address)", candidate)
                if self.state_dir:
                    discovery.save_endpoint(self.state_dir, candidate)
                return candidate
            if attempt < attempts:
                log.warning("no WireServer yet (%s); detection attempt %d of %d in %.1fs",
                            last, attempt + 1, attempts, interval)
                self._sleep(interval)
        raise ProtocolNotFoundError("no WireServer found after %d attempts; last: %s"
                                    % (attempts, last))

    def _use_endpoint(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._wire = WireServerClient(self.http, endpoint, self.config, sleep=self._sleep)
        self._hostplugin = HostPluginClient(self.http, endpoint,
                                            self.config["Protocol.HostPluginPort"])

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            self.detect()
        return self._endpoint

    @property
    def wire(self) -> WireServerClient:
        self.endpoint  # noqa: B018 - detects on first use
        return self._wire

    @property
    def hostplugin(self) -> HostPluginClient:
        self.endpoint  # noqa: B018
        if self._hostplugin.container_id is None:
            self.goal_state()
        return self._hostplugin

    @property
    def imds(self) -> ImdsClient:
        endpoint = endpoint_from_config(self.config)
        if endpoint is None:
            raise PlatformError("Protocol.ImdsEndpoint is not set")
        return ImdsClient(self.http, endpoint)

    def set_transport(self, transport: TransportSource) -> None:
        """The pair itself, or what fetches it (in a fork: the pair loaded from the broker's
        descriptor, as the fork has no channel to the broker)."""
        self._transport, self._transport_source = (None, transport) if callable(transport) \
            else (transport, None)

    def transport(self) -> "TransportCredentials":
        if self._transport is None:
            if self._transport_source is None:
                raise CertificateError("this client has no transport key (only provisioning "
                                       "and extensions get it, from the broker)")
            self._transport = self._transport_source()
        return self._transport

    # -- goal state --------------------------------------------------------------------------

    def goal_state(self) -> GoalState:
        """Fetch the goal state (refreshing the HostGAPlugin headers with it)."""
        goal_state = self.wire.goal_state()
        self.last_goal_state = goal_state
        self._hostplugin.use_goal_state(goal_state)
        return goal_state

    def _current(self, goal_state: Optional[GoalState]) -> GoalState:
        if goal_state is not None:
            return goal_state
        return self.last_goal_state or self.goal_state()

    def _refreshing(self, goal_state: Optional[GoalState], action):
        """action(goal_state); on 410 / InvalidContainer, refetch the goal state and retry once."""
        current = self._current(goal_state)
        try:
            return action(current)
        except STALE as e:
            log.info("%s; refreshing the goal state and trying again", e)
            return action(self.goal_state())

    def full_goal_state(self, goal_state: Optional[GoalState] = None) -> FullGoalState:
        """The goal state with HostingEnvironmentConfig, SharedConfig and ExtensionsConfig."""
        def fetch(gs: GoalState) -> FullGoalState:
            return FullGoalState(gs, self.wire.hosting_environment(gs),
                                 self.wire.shared_config(gs), self.wire.extensions_config(gs))
        if goal_state is None:
            goal_state = self.goal_state()
        return self._refreshing(goal_state, fetch)

    def certificates(self, goal_state: Optional[GoalState] = None
                     ) -> List[CertificateRecord]:
        """The tenant certificates of the goal state, decrypted, as records for the broker."""
        transport = self.transport()
        return self._refreshing(goal_state, lambda gs: self.wire.certificates(gs, transport))

    # -- reports -----------------------------------------------------------------------------

    def report_ready(self, goal_state: Optional[GoalState] = None) -> None:
        self._refreshing(goal_state, lambda gs: self.wire.report_health(gs, reports.READY))

    def report_not_ready(self, substatus: str = reports.PROVISIONING, description: str = "",
                         goal_state: Optional[GoalState] = None) -> None:
        self._refreshing(goal_state, lambda gs: self.wire.report_health(
            gs, reports.NOT_READY, substatus, description))

    def report_role_properties(self, thumbprint: str,
                               goal_state: Optional[GoalState] = None) -> None:
        self._refreshing(goal_state,
                         lambda gs: self.wire.report_role_properties(gs, thumbprint))

    def send_telemetry(self, events: Sequence[reports.TelemetryEvent]) -> int:
        return self.wire.send_telemetry(events)

    def report_health_service(self, observations: Sequence[reports.Observation]) -> None:
        self.wire.report_health_service(observations)

    def upload_status(self, content: bytes,
                      extensions_config: Optional[ExtensionsConfig] = None) -> str:
        """Upload the VM status blob: HostGAPlugin /status first, then a direct PUT.

        Returns the channel used ("hostplugin" or "direct"). Without a StatusUploadBlob the
        goal state is refetched once. A stale HostGAPlugin (410) refreshes the goal state and
        ends this iteration, as waagent does (raises ResourceGoneError).
        """
        if extensions_config is None or not extensions_config.status_upload_blob:
            extensions_config = self.full_goal_state().extensions_config
        if extensions_config is None or not extensions_config.status_upload_blob:
            raise PlatformError("the goal state has no StatusUploadBlob")
        requests = reports.status_blob_requests(extensions_config.status_upload_blob,
                                                extensions_config.status_blob_type, content)
        try:
            for request in requests:
                self.hostplugin.put_status(request)
            return "hostplugin"
        except STALE:
            self.goal_state()
            raise
        except (HttpError, PlatformError) as e:
            log.info("status via the HostGAPlugin failed (%s); putting it directly", e)
        for request in requests:
            self.http.request("PUT", request.url, headers=dict(request.headers),
                              body=request.body, proxied=True, ok=(200, 201, 202))
        return "direct"

    # -- artifacts ---------------------------------------------------------------------------

    def download(self, uris: Sequence[str], manifest_url: Optional[str] = None,
                 is_manifest: bool = False, max_bytes: Optional[int] = None,
                 verify_from_artifacts_blob: bool = False) -> bytes:
        """An artifact (manifest or package) from the first URI that works: each tried
        directly (proxied per HttpProxy.*) and through the HostGAPlugin, in the order that
        last worked, within Protocol.DownloadTimeout."""
        if not uris:
            raise PlatformError("no URI to download from")
        deadline = time.monotonic() + self.config["Protocol.DownloadTimeout"]
        order = list(uris)
        random.shuffle(order)
        failures = []
        for uri in order:
            channels = ["direct", "hostplugin"]
            if self._hgap_default_channel:
                channels.reverse()
            for index, channel in enumerate(channels):
                if time.monotonic() >= deadline:
                    break
                try:
                    if channel == "direct":
                        data = self.http.request("GET", uri, proxied=True, max_bytes=max_bytes,
                                                 deadline=deadline).body
                    else:
                        data = self._refreshing(None, lambda gs: self.hostplugin.artifact(
                            uri, manifest_url, verify_from_artifacts_blob, is_manifest,
                            max_bytes, deadline))
                except (HttpError, PlatformError) as e:
                    failures.append("%s via %s: %s" % (redact_sas(uri.split("?")[0]), channel, e))
                    continue
                if index == 1:
                    self._hgap_default_channel = channel == "hostplugin"
                    log.info("default download channel is now %s", channel)
                return data
        raise HttpError("download failed: %s" % "; ".join(failures[-4:]))

    def vm_settings(self, etag: Optional[str] = None) -> VmSettings:
        return self._refreshing(None, lambda gs: self.hostplugin.vm_settings(etag))
