"""The HostGAPlugin client (protocol.md §1.12, §1.14): versions, health, artifact relay,
status relay, vmSettings with its ETag, vmAgentLog. Never proxied.

Every call but /versions needs the goal state's ContainerId and ConfigName (set with
`use_goal_state`); a 410 or InvalidContainerConfiguration means they are stale: the caller
refreshes the goal state, calls `use_goal_state` again and retries once.
"""

import json
import logging
import os
from typing import NamedTuple, Optional

from workers.platform import reports
from workers.platform.endpoint import Endpoint
from workers.platform.errors import DocumentError, HttpError, PlatformError
from workers.platform.goalstate import GoalState
from workers.platform.http import HttpClient
from workers.platform.identity import AGENT_NAME, AGENT_VERSION, HOST_PLUGIN_API_VERSION
from workers.platform.vmsettings import (VmSettingsGoalState, decode_vm_settings,
                                         parse_vm_settings)

log = logging.getLogger(__name__)

MIN_VM_SETTINGS_VERSION = (1, 0, 8, 133)
VM_AGENT_LOG_TIMEOUT = 30.0


def correlation_id() -> str:
    """A random (version 4) UUID, as str(uuid.uuid4()) writes it: uuid itself imports the
    platform module, ~0.2 MiB resident in the workers for this one header (issue 17)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40   # version 4
    b[8] = (b[8] & 0x3F) | 0x80   # the RFC 4122 variant
    h = b.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


class VmSettings(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    """The answer of GET /vmSettings: `changed` with a document and ETag, or not.

    `extensions_goal_state` is the document as typed records (workers.platform.vmsettings: an
    ExtensionsConfig with the vmSettings extras); ignore it when its `is_fabric` is true.
    `document` (the decoded JSON) and `raw` (the body) are kept for history and debugging.
    """
    supported: bool
    changed: bool
    etag: Optional[str]
    document: Optional[dict] = None
    raw: bytes = b""
    extensions_goal_state: Optional[VmSettingsGoalState] = None

    def __repr__(self):  # not the document: no SAS or protectedSettings in a log line
        return "VmSettings(supported=%r, changed=%r, etag=%r)" % (self.supported, self.changed,
                                                                  self.etag)


def _version_tuple(value: str):
    try:
        return tuple(int(p) for p in value.split("."))
    except (AttributeError, ValueError):
        return None


class HostPluginClient:
    def __init__(self, http: HttpClient, endpoint: Endpoint, port: int):
        self.http = http
        self.endpoint = Endpoint(endpoint.host, port)
        self.container_id: Optional[str] = None
        self.role_config_name: Optional[str] = None

    def url(self, path: str) -> str:
        return self.endpoint.base_url + path

    def use_goal_state(self, goal_state: GoalState) -> None:
        self.container_id = goal_state.container_id
        self.role_config_name = goal_state.role_config_name

    def headers(self, extra: Optional[dict] = None) -> dict:
        if not self.container_id:
            raise PlatformError("the HostGAPlugin needs a goal state first")
        headers = {"x-ms-version": HOST_PLUGIN_API_VERSION,
                   "x-ms-containerid": self.container_id,
                   "x-ms-host-config-name": self.role_config_name or ""}
        headers.update(extra or {})
        return headers

    def versions(self) -> list:
        headers = {"x-ms-containerid": self.container_id} if self.container_id else {}
        body = self.http.request("GET", self.url("/versions"), headers=headers,
                                 max_bytes=64 * 1024).body
        try:
            versions = json.loads(body.decode("utf-8-sig"))
        except ValueError:
            raise DocumentError("HostGAPlugin versions", "not JSON") from None
        if not isinstance(versions, list):
            raise DocumentError("HostGAPlugin versions", "not a list")
        return [v for v in versions if isinstance(v, str)]

    def available(self) -> bool:
        return HOST_PLUGIN_API_VERSION in self.versions()

    def healthy(self) -> bool:
        try:
            self.http.request("GET", self.url("/health"), headers=self.headers(),
                              policy=self.http.policy(attempts=1), max_bytes=64 * 1024)
            return True
        except HttpError:
            return False

    def artifact(self, artifact_url: str, manifest_url: Optional[str] = None,
                 verify_from_artifacts_blob: bool = False, is_manifest: bool = False,
                 max_bytes: Optional[int] = None, deadline: Optional[float] = None) -> bytes:
        """GET /extensionArtifact: the blob at `artifact_url`, relayed by the host."""
        extra = {"x-ms-artifact-location": artifact_url}
        if manifest_url:
            extra["x-ms-artifact-manifest-location"] = manifest_url
        if verify_from_artifacts_blob:
            extra["x-ms-verify-from-artifacts-blob"] = "true"
        policy = self.http.policy(retry_400=is_manifest)
        return self.http.request("GET", self.url("/extensionArtifact"),
                                 headers=self.headers(extra), policy=policy,
                                 max_bytes=max_bytes, deadline=deadline).body

    def put_status(self, request: reports.BlobRequest) -> None:
        """PUT /status: one blob request relayed by the host."""
        body = reports.host_plugin_status_body(request)
        self.http.request("PUT", self.url("/status"), body=body,
                          headers=self.headers({"Content-Type": "application/json"}))

    def vm_settings(self, etag: Optional[str] = None) -> VmSettings:
        """GET /vmSettings, one attempt: 200 new (with ETag), 304 unchanged, 404 unsupported."""
        extra = {"x-ms-client-correlationid": correlation_id()}
        if etag:
            extra["if-none-match"] = etag
        try:
            response = self.http.request("GET", self.url("/vmSettings"),
                                         headers=self.headers(extra),
                                         policy=self.http.policy(attempts=1),
                                         ok=(200, 304))
        except HttpError as e:
            if e.status == 404:
                return VmSettings(False, False, None)
            raise
        if response.status == 304:
            return VmSettings(True, False, etag)
        new_etag = response.header("ETag")
        if not new_etag:
            raise DocumentError("vmSettings", "a 200 without ETag")
        document = decode_vm_settings(response.body)
        if not isinstance(document, dict):
            raise DocumentError("vmSettings", "not a JSON object")
        version = next((v for k, v in document.items() if k.lower() == "hostgapluginversion"), "")
        version = _version_tuple(version if isinstance(version, str) else "")
        if version is None or version < MIN_VM_SETTINGS_VERSION:
            return VmSettings(False, False, None)
        typed = parse_vm_settings(response.body, new_etag, document)
        return VmSettings(True, True, new_etag, document, response.body, typed)

    def put_vm_agent_log(self, zip_bytes: bytes, deployment_id: Optional[str]) -> None:
        headers = self.headers({"x-ms-vmagentlog-deploymentid": deployment_id or "",
                                "x-ms-client-name": AGENT_NAME,
                                "x-ms-client-version": AGENT_VERSION,
                                "x-ms-client-correlationid": correlation_id()})
        self.http.request("PUT", self.url("/vmAgentLog"), body=zip_bytes, headers=headers,
                          timeout=VM_AGENT_LOG_TIMEOUT)
