"""Fixtures of the attack tests: the integration harness (real supervisor, real workers)."""

from tests.integration.supervisor_harness import accounts, agent, make_agent  # noqa: F401
