"""Fixtures of the integration tests (the harness is supervisor_harness.py)."""

from tests.integration.supervisor_harness import accounts, agent, make_agent  # noqa: F401
