"""Crash-safe writes: the target appears whole or not at all, with ordinary permissions."""

import os
import stat

import pytest

from pilip.atomic_io import atomic_path


def test_success_renames_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("done")
    finally:
        os.umask(old)
    assert target.read_text() == "done"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # readable by the group, like open()
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
