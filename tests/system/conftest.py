"""System tests: a real Debian VM under QEMU with systemd as PID 1 (see README.md here).

Session fixtures build the project's Debian package once per run (``agent_deb``, what ``make
deb`` builds), build (or take from the cache) the guest image with that package installed by
``dpkg -i``, start the platform emulator on 127.0.0.1, and boot VMs. The image
is built on first use: about 80 s for the base (cached by a hash of its inputs in
$GUESTAGENT_VM_CACHE, default /var/cache/guestagent-vm) and about 10 s for the agent layer.
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guestvm import image as _image  # noqa: E402
from guestvm.services import Emulator  # noqa: E402
from guestvm.vm import VM  # noqa: E402

TIMINGS = {}


def _unavailable(reason):
    # In CI a system suite that cannot run is a failure, not a silent skip.
    if os.environ.get("CI"):
        pytest.fail(f"system tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"system tests cannot run: {reason}")


def _check_host():
    if os.geteuid() != 0:
        _unavailable("they need root (mmdebstrap --mode=root, chroot)")
    missing = _image.missing_host_tools()
    if missing:
        _unavailable("missing host packages: apt-get install " + " ".join(missing))


@pytest.fixture(scope="session")
def base_image():
    """The Debian rootfs, kernel and key every image starts from (built or from the cache)."""
    _check_host()
    t0 = time.monotonic()
    base = _image.build_base()
    TIMINGS["base image (build, or cache hit)"] = time.monotonic() - t0
    return base


@pytest.fixture(scope="session")
def agent_deb(tmp_path_factory):
    """The current checkout's Debian package (``make deb``), built once for the whole run and
    installed by every VM image of it (the agent image and test_deb.py's)."""
    _check_host()
    t0 = time.monotonic()
    deb = _image.build_deb(tmp_path_factory.mktemp("deb"))
    TIMINGS["make deb"] = time.monotonic() - t0
    return deb


@pytest.fixture(scope="session")
def agent_image(base_image, agent_deb):
    """The VM root disk with the package installed by dpkg (built or taken from the cache)."""
    t0 = time.monotonic()
    img = _image.build_agent_image(base_image, agent_deb)
    TIMINGS["agent image (dpkg -i, or cache hit)"] = time.monotonic() - t0
    return img


def start_emulator(scenario, logdir):
    """The emulator, or the test fails with its stderr: never a stand-in that answers
    everything (tests/integration/test_run_guard.py runs this with a broken scenario)."""
    emu = Emulator(scenario, logdir)
    try:
        return emu.start()
    except Exception as e:
        emu.stop()
        pytest.fail(f"the platform emulator did not start: {e}", pytrace=False)


@pytest.fixture(scope="session")
def platform(run_dir):
    """The emulator on 127.0.0.1 with its default scenario."""
    emu = start_emulator(_image.PROJECT / "emulator" / "scenarios" / "default.json",
                         run_dir / "emulator")
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="session")
def run_dir():
    """Logs of this run's VMs (serial console, commands, QEMU command line), kept for the last
    few runs in $GUESTAGENT_VM_LOGS (default /tmp/guestagent-system)."""
    root = Path(os.environ.get("GUESTAGENT_VM_LOGS", "/tmp/guestagent-system"))
    root.mkdir(parents=True, exist_ok=True)
    old = sorted(root.glob("run-*"), key=lambda d: d.stat().st_mtime)
    for d in old[:-4]:
        shutil.rmtree(d, ignore_errors=True)
    d = Path(tempfile.mkdtemp(prefix=time.strftime("run-%Y%m%d-%H%M%S-"), dir=root))
    print(f"guestvm: VM logs in {d}")
    return d


@pytest.fixture(scope="session")
def vm_factory(agent_image, platform, run_dir):
    """Make VMs: ``vm_factory(name, **VM options)``; all are powered off at the end."""
    made = []

    def make(name="vm", **kw):
        kw.setdefault("forwards", platform.forwards)
        v = VM(agent_image, run_dir / name, name=name, **kw)
        made.append(v)
        t0 = time.monotonic()
        v.start()
        TIMINGS[f"{name}: power-on to ssh"] = time.monotonic() - t0
        return v

    try:
        yield make
    finally:
        # Every VM is stopped even if stopping another one fails.
        errors = []
        for v in made:
            try:
                v.stop()
                v.discard_disks()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def agent_vm(vm_factory, platform, run_dir):
    """The one VM of the boot scenario and the smoke checks: agent installed, unit enabled,
    booted with the emulator's provisioning DVD and a resource disk. Tests that use it leave
    the service running."""
    return vm_factory("agent-vm", dvd=platform.media(run_dir / "agent-vm-dvd"))


@pytest.fixture(scope="session")
def timings():
    """Tests add their measurements here; they are printed at the end of the run."""
    return TIMINGS


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("system test timings")
        for k, v in TIMINGS.items():
            terminalreporter.write_line(f"{k:40s} {v:7.1f} s")
