"""A test that cannot fail proves nothing. This reads every test file (ast, no import) and fails
on the three kinds of assertion that hold whatever the code does:

* a constant: `assert True`, `assert 1`, `assert "text"`;
* a tautology: both sides of a comparison the same expression (`assert x == x`, `x <= x`);
* a log event that no source file emits: `"event=NAME"` asserted in (or counted in) a log when
  no code outside tests/ writes `event=NAME`; presence would always fail, absence always pass.
"""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
EVENT = re.compile(r"event=([A-Za-z_][\w.]*)")
# A name built at run time: "event=run_%s" emits run_done and run_failed. (A bare "event=%s",
# as the spawner's warm-up record has, names nothing and is not counted.)
BUILT = re.compile(r"event=([A-Za-z_][\w.]*)%[sd]")
TAUTOLOGICAL = (ast.Eq, ast.Is, ast.LtE, ast.GtE, ast.In)
LOG_CALLS = ("debug", "info", "warning", "error", "critical", "exception", "log")


def _test_files():
    for dirpath, dirnames, files in os.walk(TESTS):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "data")]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def _emitted_events():
    """The event names the code writes, and the prefixes of those it builds (ending in '*')."""
    found = set()
    for dirpath, dirnames, files in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        if rel.split(os.sep)[0] in ("tests", ".git", "build") or "__pycache__" in rel:
            dirnames[:] = []
            continue
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    text = f.read()
                found.update(EVENT.findall(text))
                found.update(prefix + "*" for prefix in BUILT.findall(text))
    return found


def _is_emitted(name, emitted):
    return name in emitted or any(e.endswith("*") and name.startswith(e[:-1]) for e in emitted)


def _strings(node):
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            yield sub.value


def _findings(path, emitted):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    rel = os.path.relpath(path, ROOT)
    out = []
    # An event the test itself logs (to test the log machinery) is emitted, in that file.
    emitted = set(emitted)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in LOG_CALLS and node.args:
            for text in _strings(node.args[0]):
                emitted.update(EVENT.findall(text))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            test = node.test
            if isinstance(test, ast.Constant) and test.value:
                out.append("%s:%d: assert of a constant" % (rel, node.lineno))
            if isinstance(test, ast.Compare) and len(test.ops) == 1 \
                    and isinstance(test.ops[0], TAUTOLOGICAL) \
                    and ast.dump(test.left) == ast.dump(test.comparators[0]):
                out.append("%s:%d: both sides are the same expression" % (rel, node.lineno))
        # Log patterns: in asserts, and in .count("...") / wait_log("...") calls.
        if isinstance(node, (ast.Assert, ast.Call)):
            if isinstance(node, ast.Call) and not (
                    isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("count", "wait_log", "wait_for_log")):
                continue
            for text in _strings(node):
                for name in EVENT.findall(text):
                    if not _is_emitted(name, emitted):
                        out.append("%s:%d: event=%s is emitted by no source file"
                                   % (rel, node.lineno, name))
    return out


def test_no_assertion_holds_whatever_the_code_does():
    emitted = _emitted_events()
    assert len(emitted) > 20   # the scan found the code's events
    findings = []
    for path in _test_files():
        if os.path.abspath(path) == os.path.abspath(__file__):
            continue
        findings.extend(_findings(path, emitted))
    assert sorted(set(findings)) == []


def test_the_check_finds_what_it_is_for(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text('def test_x(log, x):\n'
                      '    assert True\n'
                      '    assert x == x\n'
                      '    assert log.count("event=useradd") <= 1\n'
                      '    assert "event=provisioning_done" in log\n'
                      '    assert "event=run_done" in log\n'
                      '    assert x == 2\n')
    found = _findings(str(sample), {"provisioning_done", "run_*"})
    assert sorted({f.split(": ", 1)[1] for f in found}) == [
        "assert of a constant", "both sides are the same expression",
        "event=useradd is emitted by no source file"], found
