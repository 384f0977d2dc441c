"""Manual use of the system-test harness (as root, from the checkout):

    python3 tests/system/guestvm image                 build or reuse the images; print their dirs
    python3 tests/system/guestvm run 'CMD' ['CMD'...]  boot a VM, run each command, power off
    python3 tests/system/guestvm shell                 boot a VM, print the ssh command; Enter stops it
"""
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guestvm import image  # noqa: E402
from guestvm.services import StubPlatform  # noqa: E402
from guestvm.vm import VM  # noqa: E402


def main(argv):
    if not argv or argv[0] not in ("image", "run", "shell"):
        print(__doc__)
        return 2
    base = image.build_base()
    img = image.build_agent_image(base, image.build_deb(tempfile.mkdtemp(prefix="guestvm-deb-")))
    if argv[0] == "image":
        print(base.dir)
        print(img.dir)
        return 0
    stub = StubPlatform().start()
    vm = VM(img, tempfile.mkdtemp(prefix="guestvm-"), forwards=stub.forwards,
            dvd=Path(__file__).resolve().parent.parent / "data" / "ovf-env.xml")
    rc = 0
    try:
        vm.start()
        print(f"guestvm: booted in {vm.boots[0]:.1f} s; logs in {vm.dir}", file=sys.stderr)
        if argv[0] == "shell":
            print("ssh " + shlex.join(vm._ssh_base(master=False)[1:]))
            input("Enter powers the VM off. ")
        for cmd in argv[1:]:
            r = vm.run(cmd, timeout=900)
            print(r, flush=True)
            rc = rc or r.rc
    finally:
        vm.stop()
        stub.stop()
    return rc


sys.exit(main(sys.argv[1:]))
