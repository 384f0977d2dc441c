"""Who the agent says it is.

guestagent has its own version; towards the platform it presents itself as waagent does
(`x-ms-agent-name: WALinuxAgent`, a 2.x version in the status blob and User-Agent), because
whether the platform checks them is unknown and we do not find out on customers' VMs.
"""

GUESTAGENT_VERSION = "0.1.0"
AGENT_NAME = "WALinuxAgent"
# The waagent release whose behaviour guestagent follows (reference/protocol.md).
WAAGENT_VERSION = "2.15.0.1"
USER_AGENT = "%s/%s" % (AGENT_NAME, WAAGENT_VERSION)
