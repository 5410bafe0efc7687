"""Part 2: labelling and training on a nearly full tmpfs, then space freed and the stage resumed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tools.fault_campaign.common import log, one_line_error, run_pilip, train_argv
from tools.fault_campaign.compare import (
    bits,
    csv_numbers,
    label_rows_of,
    results_lines,
    same_weights,
    scan_files,
)


@contextlib.contextmanager
def small_filesystem(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` mounted at ``path`` for the block, always unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave_bytes: int) -> Path:
    """A ballast file that leaves about ``leave_bytes`` free on ``folder``'s filesystem."""
    ballast = folder / "ballast.bin"
    free = shutil.disk_usage(folder).free
    with open(ballast, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_bytes))
    return ballast


SCRATCH_SWEEP_KB = (16, 256, 768, 1024, 1088, 1152, 1216, 2048)


def disk_campaign(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Labelling and training on a nearly full tmpfs; then space freed and the stage resumed."""
    if os.geteuid() != 0:
        return {"skipped": "mounting a tmpfs needs root"}
    baseline = root / "baseline"
    out: dict[str, Any] = {}
    stages = {
        "labelling": (
            ["chunks/water/chunk-0000.parquet"],
            [
                "label",
                "chunks/water/chunk-0000.parquet",
                "--reference",
                config["labelling"]["reference"],
                "--config",
                "config.yaml",
                "-o",
                "labels/chunk-0000.parquet",
            ],
            ["labels/chunk-0000"],
        ),
        "training": (
            [f"datasets/{config['labelling']['reference']}.parquet"],
            train_argv(
                f"datasets/{config['labelling']['reference']}.parquet",
                "models/energy",
                "--restart-if-changed",
            ),
            ["models/energy"],
        ),
    }
    # KB left free: a few geometries' Psi4 output but the table / results lines; one
    # model.pt but not last.pt / not even one model.pt / not even a metrics.csv row; then
    # labelling with Psi4's scratch files on the small disk too (TMPDIR there), at fill levels
    # from nothing to enough: around 1.1 MB, Psi4 fails to write its scratch files and frees
    # them again, so the disk no longer looks full when the failure is looked at
    cases = [
        ("labelling", 48, False),
        ("labelling", 4, False),
        ("training", 96, False),
        ("training", 24, False),
        ("training", 4, False),
    ] + [("labelling", kb, True) for kb in SCRATCH_SWEEP_KB]
    for stage, leave_kb, scratch_here in cases:
        inputs, argv, names = stages[stage]
        where = "-scratch" if scratch_here else ""
        mount = root / f"disk-{stage}{where}-{leave_kb}k"
        with small_filesystem(mount, 4096) as fs:
            shutil.copy(root / "baseline" / "config.yaml", fs / "config.yaml")
            for rel in inputs:
                (fs / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(baseline / rel, fs / rel)
            (fs / names[0]).parent.mkdir(parents=True, exist_ok=True)  # as Snakemake does
            tmp = fs / "tmp" if scratch_here else None
            if tmp is not None:
                tmp.mkdir()
            ballast = fill(fs, leave_kb * 1024)
            log(f"full disk, {stage}: {shutil.disk_usage(fs).free // 1024} KB free")
            full = run_pilip(argv, fs, tmp=tmp)
            result = one_line_error(full, names + ([str(tmp)] if tmp else []))
            result["finished"] = full.returncode == 0  # there was enough space after all
            result["bad_files"] = scan_files(fs)
            ballast.unlink()
            resumed = run_pilip(argv, fs, tmp=tmp)
            result["resume_exit_status"] = resumed.returncode
            result["resume_error"] = (
                resumed.stderr.strip().splitlines()[-1:] if resumed.returncode else []
            )
            result["bad_files_after_resume"] = scan_files(fs)
            if stage == "labelling":
                lines, ids = results_lines(fs)
                result["recomputed_geometries"] = lines - ids
                mine = {r["config_id"]: r for r in label_rows_of(fs / "labels/chunk-0000.parquet")}
                want = label_rows_of(
                    baseline / f"labels/{config['labelling']['reference']}/water/chunk-0000.parquet"
                )
                result["labels_bitwise_equal"] = sum(
                    1
                    for r in want
                    if r["config_id"] in mine
                    and bits(mine[r["config_id"]]["energy"]) == bits(r["energy"])
                )
                result["labels_compared"] = len(want)
            else:
                ref = dict(csv_numbers(baseline / "models/energy/metrics.csv"))
                got = (
                    dict(csv_numbers(fs / "models/energy/metrics.csv"))
                    if (fs / "models/energy/metrics.csv").is_file()
                    else {}
                )
                result["metrics_equal"] = bool(got) and got == ref
                result["model_equal"] = same_weights(
                    fs / "models/energy/model.pt", baseline / "models/energy/model.pt"
                )
            scratch_there = ", Psi4's scratch there too" if scratch_here else ""
            out[f"{stage}{scratch_there}, {leave_kb} KB free"] = result
            log(f"full disk, {stage}: {result['error']!r}, resumed with {resumed.returncode}")
    return out
