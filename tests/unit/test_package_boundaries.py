"""Who may import whom (issue 10 §6): the spawner may import workers/, the supervisor may
not; what both sides agree on comes from ipc/handshake.py."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def imported(package):
    names = set()
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names.update((a.name, name) for a in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.module:
                        names.add((node.module, name))
    return names


def test_the_supervisor_imports_no_worker_code():
    assert [(m, f) for m, f in imported("supervisor")
            if m == "workers" or m.startswith("workers.") or m.startswith("spawner")] == []
    # And not indirectly either: the whole supervisor, loaded, holds no workers module.
    out = subprocess.run(
        [sys.executable, "-c", "import sys, supervisor.daemon, supervisor.loop, "
         "supervisor.spawner, supervisor.trees; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('workers', 'spawner')))"],
        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"



def test_the_machinery_moved_out_of_the_supervisor_is_neutral():
    # launch/, cgroups/, loglines/ and ipc/ serve the supervisor, the spawner and the reaper:
    # none of them may reach back into supervisor/, workers/ or spawner/.
    for package in ("launch", "cgroups", "loglines", "ipc"):
        assert [(m, f) for m, f in imported(package)
                if m.split(".")[0] in ("supervisor", "workers", "spawner")] == [], package
    # The reaper runs it with -S (no site-packages): the standard library only.
    assert {m.split(".")[0] for m, _ in imported("cgroups")} <= {"errno", "os", "signal", "time"}


# Kept out of the image the spawner preloads and the resident workers import (issue 17: each
# stays mapped in both workers for the life of the VM). Why each would come, and its cost:
NOT_IN_THE_IMAGE = (
    "dataclasses", "inspect",    # records: inspect, ast, dis, ~1.2 MiB a worker
    "urllib.request",            # xml.sax.saxutils, for two escaping functions, ~0.9 MiB
    "zipfile",                   # only the download's fork opens a package, ~0.7 MiB
    "tempfile", "shutil",        # mkstemp (statefiles.temp_file now), ~0.6 MiB
    "uuid", "platform",          # one random header value, ~0.2 MiB
    "workers.provisioning.job",  # provisioning runs once and loads its own modules
    "workers.logcollector.bundle",
)


def test_the_resident_workers_image_leaves_out_what_they_never_run():
    out = subprocess.run(
        [sys.executable, "-I", "-c", "import sys, importlib; sys.path.insert(0, %r)\n"
         "from spawner import zygote; from supervisor import table\n"
         "for n in list(zygote.PRELOAD) + [m for s in table.BASE if s.resident\n"
         "                                 for m in (s.module, s.module + '.__main__')]:\n"
         "    importlib.import_module(n)\n"
         "print(' '.join(sorted(m for m in %r if m in sys.modules)))"
         % (ROOT, NOT_IN_THE_IMAGE)],
        cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_the_supervisor_leaves_out_tempfile_and_random():
    # statefiles.unlinked_file / temp_file instead (issue 17: ~0.5 MiB for the life of the VM);
    # argparse only for a command line that has arguments (systemd's has none: ~0.3 MiB).
    out = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, %r)\n"
         "import supervisor.daemon, supervisor.loop\n"
         "supervisor.daemon.parse_args([])   # what systemd runs: no argument\n"
         "print(' '.join(m for m in ('tempfile', 'random', 'argparse') if m in sys.modules))"
         % ROOT],
        cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
