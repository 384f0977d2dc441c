"""Fixtures of the integration tests (the harness is supervisor_harness.py)."""

import pytest

from emulator.confinement import Emulator
from tests.integration.supervisor_harness import accounts, agent, make_agent  # noqa: F401


@pytest.fixture
def emu():
    """The platform emulator as a real HTTP server on 127.0.0.1, stopped after the test."""
    e = Emulator()
    yield e
    e.stop()
