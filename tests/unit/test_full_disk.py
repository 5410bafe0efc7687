"""A full disk (issue 13 item 2): one line naming the file, nothing half-written left behind.

Real ENOSPC, not mocked: /dev/full for an append, and a small tmpfs (needs root; skipped
otherwise) for the atomic writers of tables and checkpoints. tools/fault_campaign
runs whole labelling and training stages on such a filesystem and resumes them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule

from pilip import atomic_io, tables
from pilip.errors import PilipError
from pilip.potential.checkpoint import save_checkpoint
from pilip.potential.models import build_model
from pilip.reference.backends.base import (
    append_result,
    open_results_for_append,
    read_results,
)


@pytest.fixture
def small_disk(mount_tmpfs):
    """A 256 KB tmpfs, unmounted after the test."""
    return mount_tmpfs("256k")


def fill(folder: Path, leave: int) -> Path:
    """A ballast file leaving about ``leave`` bytes free."""
    ballast = folder / "ballast.bin"
    ballast.write_bytes(b"\0" * max(0, shutil.disk_usage(folder).free - leave))
    return ballast


def assert_no_space_error(exc: PilipError, path: Path) -> None:
    text = str(exc)
    assert "\n" not in text
    assert text.startswith(f"{path}: no space left on device")
    assert "free some space and rerun" in text


def test_append_to_a_full_device_names_it():
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(PilipError) as info:
            atomic_io.append_bytes(fd, b"x" * 100, "/dev/full")
    finally:
        os.close(fd)
    assert_no_space_error(info.value, Path("/dev/full"))


def test_results_line_on_a_full_disk_leaves_no_half_line(small_disk):
    results = small_disk / "chunk.results.jsonl"
    record = {"config_id": "a", "status": "ok", "energy": -1.0, "pad": "x" * 3000}
    with open_results_for_append(results) as out:
        append_result(out, record)
    before = results.read_bytes()
    fill(small_disk, 1000)  # less than the next line needs
    with pytest.raises(PilipError) as info:
        with open_results_for_append(results) as out:
            append_result(out, {**record, "config_id": "b", "pad": "y" * 9000})
    assert_no_space_error(info.value, results)
    assert results.read_bytes() == before  # cut back: whole lines only
    assert list(read_results(results)) == ["a"]


def test_table_on_a_full_disk_is_not_left_under_its_name(small_disk):
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(400):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        frames.append(atoms)
    table = tables.configurations_from_atoms(frames, system="water", generator="rattle")
    fill(small_disk, 8000)
    path = small_disk / "water.parquet"
    with pytest.raises(PilipError) as info:
        tables.write_table(table, path, "configurations", {})
    assert_no_space_error(info.value, path)
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast.bin"]


def test_checkpoint_on_a_full_disk_is_not_left_under_its_name(small_disk):
    torch.manual_seed(0)
    model = build_model("schnet", n_features=32, n_interactions=2, cutoff=3.0)
    fill(small_disk, 16000)
    path = small_disk / "model.pt"
    with pytest.raises(PilipError) as info:
        save_checkpoint(path, model=model, model_name="schnet", meta={"config": {}})
    assert_no_space_error(info.value, path)
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast.bin"]


def test_a_text_row_on_a_full_disk_leaves_no_half_row(small_disk):
    """metrics.csv rows are appended whole or not at all."""
    log = small_disk / "metrics.csv"
    atomic_io.append_text(log, "epoch,loss\n1,0.5\n")
    before = log.read_bytes()
    fill(small_disk, 1000)
    with pytest.raises(PilipError) as info:
        atomic_io.append_text(log, "2," + "9" * 20000 + "\n")
    assert_no_space_error(info.value, log)
    assert log.read_bytes() == before
