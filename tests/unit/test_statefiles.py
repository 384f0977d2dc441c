"""statefiles: how every state file is written (write_atomic) and the temporary file it and the
extensions worker's package file start from (temp_file, tempfile.mkstemp's without tempfile)."""

import os
import stat

import pytest

import statefiles
from statefiles import temp_file, write_atomic


def test_write_atomic_replaces_the_file_whole_with_its_mode_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    write_atomic(str(path), b"new", mode=0o640)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_write_atomic_replaces_a_link_and_never_writes_through_it(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    (tmp_path / "state.json").symlink_to(target)
    write_atomic(str(tmp_path / "state.json"), b"new")
    assert target.read_bytes() == b"keep"
    assert not (tmp_path / "state.json").is_symlink()
    assert (tmp_path / "state.json").read_bytes() == b"new"


def test_temp_file_is_new_private_and_close_on_exec(tmp_path):
    fd, path = temp_file(str(tmp_path), ".x.")
    try:
        assert os.path.dirname(path) == str(tmp_path)
        assert os.path.basename(path).startswith(".x.")
        st = os.fstat(fd)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 0
        assert os.get_inheritable(fd) is False
        os.write(fd, b"data")
        assert open(path, "rb").read() == b"data"
    finally:
        os.close(fd)
    fd2, path2 = temp_file(str(tmp_path), ".x.")
    os.close(fd2)
    assert path2 != path


def test_temp_file_never_opens_an_existing_name_or_a_link(tmp_path, monkeypatch):
    # Every random name taken (a link planted at it): it gives up rather than follow or reuse.
    monkeypatch.setattr(statefiles.os, "urandom", lambda n: b"\0" * n)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / (".x." + "00" * 8)).symlink_to(victim)
    with pytest.raises(FileExistsError):
        temp_file(str(tmp_path), ".x.")
    assert victim.read_bytes() == b"keep"


def test_unlinked_file_is_private_nameless_and_gone_when_closed(tmp_path):
    fd = statefiles.unlinked_file(str(tmp_path))
    try:
        st = os.fstat(fd)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_nlink == 0
        assert os.get_inheritable(fd) is False
        assert os.listdir(tmp_path) == []
        with open(os.dup(fd), "w+b") as f:
            f.write(b"out")
            f.seek(0)
            assert f.read() == b"out"
    finally:
        os.close(fd)
    assert os.listdir(tmp_path) == []


def test_unlinked_file_without_o_tmpfile_unlinks_a_temp_file(tmp_path, monkeypatch):
    # A filesystem without O_TMPFILE (EOPNOTSUPP): the same file, made and unlinked.
    real_open = os.open

    def no_tmpfile(path, flags, mode=0o777, **kw):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(95, "Operation not supported")
        return real_open(path, flags, mode, **kw)
    monkeypatch.setattr(statefiles.os, "open", no_tmpfile)
    fd = statefiles.unlinked_file(str(tmp_path))
    try:
        st = os.fstat(fd)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_nlink == 0
        assert os.listdir(tmp_path) == []
    finally:
        os.close(fd)
