"""Scratch folders of killed label jobs are removed by the next job on the same host."""

from __future__ import annotations

import os
import subprocess
import sys

from pilip import scratch


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_job_removes_folders_of_dead_processes_only(tmp_path):
    host = scratch.host_name()
    dead = tmp_path / f"pilip-label-{host}-{dead_pid()}-abcd"
    live = tmp_path / f"pilip-label-{host}-{os.getpid()}-efgh"
    elsewhere = tmp_path / f"pilip-label-otherhost-{dead_pid()}-ijkl"
    unrelated = tmp_path / "pilip-labelling-notes"
    for folder in (dead, live, elsewhere, unrelated):
        folder.mkdir()
        (folder / "psi.1234.32").write_bytes(b"\0" * 1000)  # a scratch file inside
    with scratch.scratch_folder("pilip-label", tmp_path) as mine:
        assert mine.is_dir() and mine.name.startswith(f"pilip-label-{host}-{os.getpid()}-")
        assert not dead.exists()
        assert live.exists() and elsewhere.exists() and unrelated.exists()
    assert not mine.exists()


def test_default_root_is_the_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with scratch.scratch_folder("pilip-label") as mine:
        assert mine.parent == tmp_path
