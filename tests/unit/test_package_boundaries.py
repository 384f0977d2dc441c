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


def test_the_resident_workers_image_has_no_dataclasses():
    # What the spawner preloads and the resident workers import: dataclasses would bring
    # inspect, ast and dis, ~1.2 MiB in each worker for the life of the VM (issue 17).
    out = subprocess.run(
        [sys.executable, "-I", "-c", "import sys, importlib; sys.path.insert(0, %r)\n"
         "from spawner import zygote; from supervisor import table\n"
         "for n in list(zygote.PRELOAD) + [m for s in table.BASE if s.resident\n"
         "                                 for m in (s.module, s.module + '.__main__')]:\n"
         "    importlib.import_module(n)\n"
         "print(sorted(m for m in ('dataclasses', 'inspect') if m in sys.modules))" % ROOT],
        cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
