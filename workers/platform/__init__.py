"""The platform client: WireServer, HostGAPlugin, IMDS, goal state, certificates, reports.

Every platform-talking worker (provisioning, extensions, monitoring, logcollector) uses this
package and nothing else to reach the platform. It parses all untrusted input (defusedxml, size
caps on every body read, typed records that reject what is missing) and never needs root.

Using it
--------
    from config import load
    from workers.platform import PlatformClient, reports

    client = PlatformClient.for_worker(worker, load("/etc/waagent.conf"))
    client.detect()                       # optional: the first call that needs it detects
    gs = client.goal_state()              # GoalState: incarnation, container_id,
                                          #   role_instance_id, role_config_name, URLs
    full = client.full_goal_state(gs)     # + hosting_environment, shared_config,
                                          #   extensions_config (typed records)
    records = client.certificates(gs)     # [CertificateRecord(thumbprint, certificate_pem,
                                          #   private_key_pem or None)]
    certificates.install_for_extensions(worker, records)
                                          # extensions only: the broker writes Lib.Dir/
                                          #   <THUMBPRINT>.crt / .prv (root 0600) and removes
                                          #   the ones it wrote that left the set
    client.report_not_ready(reports.PROVISIONING, "Starting", gs)
    client.report_not_ready(reports.PROVISIONING_FAILED, str(error), gs)  # trimmed to 3686
    client.report_ready(gs)
    client.report_role_properties(ssh_host_key_thumbprint, gs)
    client.upload_status(json_bytes, full.extensions_config)   # HGAP /status, then direct PUT
    client.send_telemetry([reports.TelemetryEvent(provider, 1, (("Name", "x"), ...))])
    client.report_health_service([reports.Observation("GuestAgentPluginHeartbeat", True)])
    vms = client.vm_settings(etag)        # VmSettings(supported, changed, etag, document,
                                          #   extensions_goal_state): the typed record, an
                                          #   ExtensionsConfig + source, on_hold, etag...;
                                          #   ignore it when .is_fabric
    tracker = goalstate_tracker.GoalStateTracker(client, conf)
    update = tracker.update()             # Update: extensions_goal_state (FastTrack or Fabric,
                                          #   the newer by created-on time), certificates,
                                          #   *_changed flags; a FastTrack goal state needing a
                                          #   certificate not in the goal state refetches it all
    client.download(uris, is_manifest=True, max_bytes=...)     # direct, then HGAP fallback
    client.imds.compute()                 # IMDS compute metadata (dict)

`goal_state` may be omitted from the report calls: the last fetched one is used. Any call
that gets 410 Gone or InvalidContainerConfiguration refetches the goal state and retries once.

Errors (workers.platform.errors): DocumentError (a malformed or incomplete document, with
`.document` and `.reason`: keep the last-known-good state), HttpError (gave up after the
configured attempts; `.status`, `.attempts`), ResponseTooLargeError (a body over its cap,
never read whole), ResourceGoneError / InvalidContainerError (stale goal state, already
retried once), CertificateError, ProtocolNotFoundError (no WireServer after
Protocol.DetectionAttempts).

Configuration keys: Protocol.Endpoint (skip discovery: tests, the VM harness),
Protocol.HostPluginPort, Protocol.ImdsEndpoint, Protocol.EndpointDiscovery, Protocol.HttpTimeout,
HttpAttempts, RetryDelay, ThrottleDelay, ThrottledAttempts, HealthReportAttempts,
HealthReportRetryDelay, GoalStateRetries, GoalStateRetryDelay, DownloadTimeout,
MaxResponseBytes, DetectionAttempts, DetectionInterval, Agent.StateDir (the worker's own
<StateDir>/<worker>/ remembers the detected endpoint), OS.SysRoot (/proc/net/route and lease
files), HttpProxy.* (storage only).

In a worker: `PlatformClient.for_worker(worker, conf)`. Its transport key comes from the broker
(`platform.transport_key`, a read-only descriptor) the first time Certificates need it; only
provisioning and extensions may ask — for monitoring and the log collector it is a violation
that ends them, so they never call certificates(). Tests and tools without a supervisor pass
`transport=` (a TransportCredentials or a callable) to from_config.

How the agent names itself (x-ms-agent-name WALinuxAgent, User-Agent WALinuxAgent/2.15.0.1,
the status blob's versions) is in workers.platform.identity: AGENT_NAME, AGENT_VERSION.

Modules: endpoint (discovery, leases), http (retries, throttling, caps, proxies), documents
(safe XML, Versions, HostingEnvironmentConfig, SharedConfig, Certificates envelope), goalstate,
extensionsconfig (ExtensionsConfig, manifests), vmsettings (the vmSettings JSON as the same
records), goalstate_tracker (FastTrack or Fabric, certificate refreshes), certificates (transport
key, CMS, PKCS#12, install_for_extensions),
reports (health, role properties, telemetry, HealthService, status blob bodies), wireserver,
hostplugin, imds, client (PlatformClient), identity, redaction, errors.
"""

from workers.platform.client import FullGoalState, PlatformClient  # noqa: F401
from workers.platform.errors import (CertificateError, DocumentError, HttpError,  # noqa: F401
                                     InvalidContainerError, PlatformError,
                                     ProtocolNotFoundError, ResourceGoneError,
                                     ResponseTooLargeError)
