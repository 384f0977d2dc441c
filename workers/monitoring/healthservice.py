"""The HealthService heartbeat (protocol.md §1.13, §9.3 SendHostPluginHeartbeat and
SendImdsHeartbeat): every Protocol.HealthServicePeriod (waagent: 1 min) the HostGAPlugin's
/health and IMDS are probed once each, and one POST to http://<WireServer>:80/HealthService
(Content-Type: application/json) carries an observation for each:
`GuestAgentPluginHeartbeat` (unhealthy once /health has failed for 5 minutes on end) and
`InstanceMetadataHeartbeat` (3 minutes; not sent when Protocol.ImdsEndpoint is unset, nor
the real IMDS probed behind an emulated WireServer).

A probe that fails is a `false` observation only once its failures have lasted that long, as
waagent's ErrorState counts them; a POST that fails is logged by the loop and the next period
tries again. No broker verb: the worker's primary group is guestagent-wire, which the
firewall admits.
"""

import logging
import time

from workers.monitoring.check import Check, on_platform

log = logging.getLogger("monitoring")

HGAP = "GuestAgentPluginHeartbeat"
IMDS = "InstanceMetadataHeartbeat"
UNHEALTHY_AFTER = {HGAP: 300.0, IMDS: 180.0}


def verdict(state: dict, name: str, ok: bool, now: float) -> bool:
    """Whether `name` is reported healthy: yes while it answers, and through a run of
    failures shorter than UNHEALTHY_AFTER[name] (state keeps when the run began)."""
    key = "failing_since." + name
    if ok:
        state.pop(key, None)
        return True
    since = state.setdefault(key, now)
    return now - since < UNHEALTHY_AFTER[name]


REAL_WIRESERVER, REAL_IMDS = "168.63.129.16", "169.254.169.254"


def imds_wanted(conf) -> bool:
    """IMDS is probed when set, but never the real one behind an emulated WireServer (a
    Protocol.Endpoint of another address with the default Protocol.ImdsEndpoint: a test or a
    demo, which must not reach 169.254.169.254)."""
    imds = (conf["Protocol.ImdsEndpoint"] or "").split(":")[0]
    wire = (conf["Protocol.Endpoint"] or REAL_WIRESERVER).split(":")[0]
    return bool(imds) and not (imds == REAL_IMDS and wire != REAL_WIRESERVER)


def run(ctx, clock=time.monotonic) -> None:
    from workers.platform.reports import Observation
    client = ctx.client
    mine = ctx.state.setdefault("healthservice", {})
    try:
        hgap_ok = client.hostplugin.healthy()
    except Exception as e:  # noqa: BLE001 - no goal state for its headers: not healthy
        log.info("event=hostplugin_health_unknown reason=%r", str(e)[:200])
        hgap_ok = False
    observations = [Observation(HGAP, verdict(mine, HGAP, hgap_ok, clock()))]
    if imds_wanted(ctx.conf):
        imds_ok = client.imds.healthy()
        observations.append(Observation(IMDS, verdict(mine, IMDS, imds_ok, clock()),
                                        "" if imds_ok else "IMDS health probe failed"))
    client.report_health_service(observations)
    log.debug("event=health_service %s", " ".join("%s=%s" % (o.name, o.is_healthy)
                                                  for o in observations))


CHECKS = (
    Check("healthservice", "Protocol.HealthServicePeriod", on_platform, run),
)
