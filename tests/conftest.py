"""Shared by every test layer: where the recorded upstream fixtures are (tests/data, in this
repository: a clone alone runs the suite)."""

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "walinuxagent"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.fail("the recorded fixtures are missing at %s" % FIXTURES)
    return FIXTURES


# Skips fail under CI and are summed up otherwise; the run fails if it leaves a process running.
from tests.run_guard import (  # noqa: E402,F401
    pytest_configure, pytest_runtest_makereport, pytest_sessionfinish, pytest_terminal_summary,
    pytest_unconfigure)
