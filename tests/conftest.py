"""Shared by every test layer: where the shared reference fixtures are."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# shared/ sits beside the checkout (and beside CI's clone); GUESTAGENT_SHARED overrides.
SHARED = pathlib.Path(os.environ.get("GUESTAGENT_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "walinuxagent"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.fail("the shared fixtures are missing at %s (set GUESTAGENT_SHARED)" % FIXTURES)
    return FIXTURES
