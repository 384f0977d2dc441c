"""How the agent names itself to the platform: exactly as waagent does (DESIGN.md, Configuration).

Whether the WireServer, HostGAPlugin or CRP check these is unknown, so guestagent does not find
out: it sends the name WALinuxAgent and a 2.x version everywhere waagent sends its own
(headers, User-Agent, the status blob's guestAgentStatus.version and guestOSInfo.version).
GUESTAGENT_VERSION is our own release, for logs and `agentctl version`.
"""

from config.version import AGENT_NAME, GUESTAGENT_VERSION, USER_AGENT  # noqa: F401
from config.version import WAAGENT_VERSION as AGENT_VERSION

# Health probes of IMDS identify themselves with this suffix (protocol.md §1.2).
USER_AGENT_HEALTH = USER_AGENT + "+health"

# The protocol versions spoken (protocol.md §1.3, §1.12).
WIRE_PROTOCOL_VERSION = "2012-11-30"
HOST_PLUGIN_API_VERSION = "2015-09-01"
BLOB_API_VERSION = "2014-02-14"
