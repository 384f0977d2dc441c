"""Fixtures for the emulator's contract tests (helpers in emulator_harness.py)."""
import pytest

from tests.contract.emulator_harness import DEFAULT_SCENARIO, start_emulator


@pytest.fixture
def emulator_factory():
    started = []

    def factory(*args):
        emu = start_emulator(*args)
        started.append(emu)
        return emu

    yield factory
    for emu in started:
        emu.stop()


@pytest.fixture(scope="module")
def default_emulator():
    emu = start_emulator("--scenario", DEFAULT_SCENARIO)
    yield emu
    emu.stop()

