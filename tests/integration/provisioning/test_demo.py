"""The README's first command, `make demo`: the whole agent against the emulator in a confined
host. It runs here as the Makefile runs it (the venv's python, from the checkout)."""

import json
import os
import re
import subprocess

import pytest

from emulator.confinement import GUESTAGENTD, PYTHON

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
SCENARIO = json.load(open(os.path.join(ROOT, "emulator", "scenarios", "default.json")))


def test_make_demo_provisions_and_leaves_the_machine_as_it_was():
    if os.geteuid() != 0:
        pytest.skip("the demo needs root (namespaces, useradd in a copied /etc)")
    if not os.path.exists(GUESTAGENTD):
        pytest.fail("%s is missing: run `make venv` first" % GUESTAGENTD)
    p = subprocess.run([PYTHON, "-m", "emulator.demo"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "Result: OK (Ready recorded 1 time(s))" in out, out
    assert re.search(r"^user +%s:x:\d+:\d+:" % SCENARIO["vm"]["username"], out, re.M), out
    assert "saved ovf-env.xml   password redacted" in out, out
    assert re.search(r"^serial console +[1-9]\d* lines echoed", out, re.M), out
    assert re.search(r"^The machine is as it was: hostname \S+, /etc/passwd unchanged, "
                     r"no /home/%s$" % SCENARIO["vm"]["username"], out, re.M), out
    assert SCENARIO["vm"]["password"] not in out + p.stderr
