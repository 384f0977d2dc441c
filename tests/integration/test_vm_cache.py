"""The system tests' image cache survives a build that was killed half-way (tests/system/guestvm/
image.py). mmdebstrap --mode=root mounts proc, sys, dev/pts and dev/shm inside the rootfs it
builds; CI once found those mounts left by a killed run, and every later build then failed in
rmtree. Here a real bind mount of a host folder sits inside a stale build folder: clearing the
folder must unmount it, not delete the host's files through it."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))

from guestvm import image  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def test_a_stale_build_folder_with_mounts_inside_is_cleared_without_touching_the_host(tmp_path):
    host = tmp_path / "host-dev"
    host.mkdir()
    (host / "keep").write_text("the host's own file\n")
    stale = tmp_path / "base-stale" / "rootfs.tmp"
    (stale / "dev").mkdir(parents=True)
    (stale / "proc").mkdir()
    subprocess.run(["mount", "--bind", str(host), str(stale / "dev")], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(stale / "proc")], check=True)
    try:
        assert len(image._mounts_under(tmp_path / "base-stale")) == 2
        image._remove(tmp_path / "base-stale")
        assert not (tmp_path / "base-stale").exists()
        assert (host / "keep").read_text() == "the host's own file\n"
        assert image._mounts_under(tmp_path) == []
    finally:
        for point in image._mounts_under(tmp_path):
            subprocess.run(["umount", "-l", point])
