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


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    """kill -9 leaves the temporary behind; the next writer of the file on this host removes
    it if its process is gone, and never a live writer's or another file's."""
    import subprocess
    import sys

    from pilip.scratch import host_name

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    target = tmp_path / "learning_curve.png"
    dead = tmp_path / f".learning_curve.png.{host_name()}-{proc.pid}-abc123.tmp"
    live = tmp_path / f".learning_curve.png.{host_name()}-{os.getpid()}-def456.tmp"
    other = tmp_path / f".parity.png.{host_name()}-{proc.pid}-ghi789.tmp"
    for debris in (dead, live, other):
        debris.write_bytes(b"half a PNG")
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(f".learning_curve.png.{host_name()}-{os.getpid()}-")
        tmp.write_bytes(b"a PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["learning_curve.png", live.name, other.name]
    )
