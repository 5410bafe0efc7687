"""Snakemake end to end on a tiny xtb config: chunking, kill -9 of the whole run, resume.

Every computed geometry appends exactly one line to its chunk's results JSONL, which is never
rewritten by a plain run. So "the rerun recomputed nothing that had finished" is checked as:
every line written before the kill is still there, byte for byte, and no configuration has a
second line.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import molecule
from tblite.ase import TBLite

from pilip import keys, tables

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SIZES = {"water": 5, "fullerene": 6}  # fullerene: ~0.5 s per GFN2-xTB single point
CHUNK_SIZE = 3

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def make_study(root: Path) -> dict[str, list]:
    config = {
        "systems": {"water": {"seed": "H2O"}, "fullerene": {"seed": "C60"}},
        "references": {"xtb": {"backend": "xtb", "method": "GFN2-xTB"}},
        "labelling": {"reference": "xtb", "chunk_size": CHUNK_SIZE, "threads": 1},
        "splits": {"train": 0.4, "val": 0.1, "test": 0.5},
        "force_validation": {"reference": "xtb", "per_system": 1},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(7)
    frames = {}
    for system, seed in (("water", "H2O"), ("fullerene", "C60")):
        frames[system] = []
        for _ in range(SIZES[system]):
            atoms = molecule(seed)
            atoms.positions += rng.normal(0.0, 0.03, atoms.positions.shape)
            frames[system].append(atoms)
        table = tables.configurations_from_atoms(frames[system], system=system, generator="rattle")
        tables.write_table(
            table, root / "configurations" / f"{system}.parquet", "configurations", {}
        )
    return frames


def snakemake(root: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    command = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(root), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)  # fmt: skip


def results_files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((root / "labels").rglob("*.results.jsonl"))}


def mid_chunk(root: Path) -> bool:
    """A chunk has finished geometries in its JSONL but no labels table yet."""
    for path, data in results_files(root).items():
        table = path.with_name(path.name.replace(".results.jsonl", ".parquet"))
        if "chunk-" in path.name and data.count(b"\n") >= 1 and not table.exists():
            return True
    return False


@pytest.mark.skipif(shutil.which("snakemake", path=str(BIN)) is None, reason="no snakemake")
def test_kill_and_resume_recomputes_no_finished_geometry(tmp_path):
    frames = make_study(tmp_path)
    target = "datasets/xtb.parquet"

    run = snakemake(tmp_path, "--cores", "2", target, start_new_session=True)
    deadline = time.monotonic() + 120
    while not mid_chunk(tmp_path):
        assert run.poll() is None, f"snakemake ended before the kill:\n{run.stdout.read()}"
        assert time.monotonic() < deadline, "no chunk was ever caught in progress"
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)  # the whole run: snakemake and its label jobs
    run.wait()
    time.sleep(0.5)
    before = results_files(tmp_path)
    assert not (tmp_path / target).exists()

    for args in (["--unlock"], ["--cores", "2", "--rerun-incomplete", target]):
        resumed = snakemake(tmp_path, *args)
        output = resumed.communicate(timeout=300)[0]
        assert resumed.returncode == 0, output

    after = results_files(tmp_path)
    for path, data in before.items():
        assert after[path].startswith(data[: data.rfind(b"\n") + 1]), f"{path} was rewritten"
    n_configs = sum(SIZES.values())
    chunk_ids = [
        json.loads(line)["config_id"]
        for path, data in after.items()
        if "chunk-" in path.name
        for line in data.decode().splitlines()
    ]
    assert len(chunk_ids) == len(set(chunk_ids)) == n_configs  # each geometry computed once

    for system, n in SIZES.items():
        chunks = sorted(p.name for p in (tmp_path / "chunks" / system).glob("chunk-*.parquet"))
        assert chunks == [f"chunk-{i:04d}.parquet" for i in range(math.ceil(n / CHUNK_SIZE))]
        assert len(list((tmp_path / "labels" / "xtb" / system).glob("chunk-*.parquet"))) == len(
            chunks
        )

    dataset = tables.read_table(tmp_path / target, kind="dataset")
    assert dataset.num_rows == n_configs
    energies = dict(
        zip(
            dataset.column(keys.ID).to_pylist(),
            dataset.column(keys.ENERGY).to_pylist(),
            strict=True,
        )
    )
    water = tables.read_table(tmp_path / "configurations" / "water.parquet")
    first = frames["water"][0].copy()
    first.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert energies[water.column(keys.ID)[0].as_py()] == pytest.approx(
        first.get_potential_energy(), abs=1e-9
    )
    # one force-validation row per system that has a test-split configuration
    split = dict(
        zip(
            dataset.column(keys.ID).to_pylist(), dataset.column(keys.SPLIT).to_pylist(), strict=True
        )
    )
    systems_with_test = {
        system
        for system in SIZES
        for i in tables.read_table(tmp_path / "configurations" / f"{system}.parquet")
        .column(keys.ID)
        .to_pylist()
        if split[i] == "test"
    }
    assert systems_with_test
    assert sum(dataset.column(keys.FORCE_VALIDATION).to_pylist()) == len(systems_with_test)
    summary = (tmp_path / "datasets" / "xtb.summary.txt").read_text()
    assert f"labels: ok {n_configs}, failed 0, timeout 0, unlabelled 0" in summary
