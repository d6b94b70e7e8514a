"""The console's one helper for its state files (links, sessions) and the users file it watches."""

from __future__ import annotations

import fcntl
import os
import stat

import pytest

from pipeline.console.statefile import StateFile


def test_missing_file_has_no_stamp_and_read_raises(tmp_path):
    f = StateFile(tmp_path / "links.json")
    assert f.stamp() is None
    with pytest.raises(FileNotFoundError):
        f.read()


def test_write_is_private_atomic_and_changes_the_stamp(tmp_path):
    f = StateFile(tmp_path / "sub" / "sessions.json")  # the parent is made
    f.write("{}")
    first = f.stamp()
    assert f.read() == "{}" and first is not None and first[1] == 2
    assert stat.S_IMODE(os.stat(f.path).st_mode) == 0o600
    f.write('{"a": 1}')
    assert f.stamp() != first and f.read() == '{"a": 1}'
    assert sorted(p.name for p in f.path.parent.iterdir()) == ["sessions.json"]  # no temporary left


def test_lock_excludes_another_holder_until_released(tmp_path):
    f = StateFile(tmp_path / "links.json")
    lock = tmp_path / ".links.json.lock"

    def try_lock() -> bool:
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file description: contends
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    with f.locked():
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
        assert not try_lock()
    assert try_lock()
