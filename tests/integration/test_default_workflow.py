"""The whole DAG through Snakemake on a tiny study (tests/e2e/config.yaml), with real Psi4.

Checks the contents a user reads: labels with MP2/CBS energies that match the components,
a dataset with splits and force-validation rows, both training variants, metrics in range,
MD results, the summary table and the plots.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pilip import keys
from pilip.psi4_env import find_psi4_python

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "e2e" / "config.yaml"

pytestmark = [pytest.mark.workflow, pytest.mark.slow, pytest.mark.psi4]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    try:
        find_psi4_python(None)
    except Exception as exc:  # no Psi4 interpreter: nothing to label with
        pytest.skip(f"no Psi4 interpreter: {exc}")
    work = tmp_path_factory.mktemp("study")
    shutil.copy(CONFIG, work / "config.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    proc = subprocess.run(
        [*snakemake, "--cores", "2", "--configfile", "config.yaml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work


def test_dataset_holds_mp2_cbs_energies_and_splits(study):
    dataset = pq.read_table(study / "datasets" / "mp2_cbs.parquet").to_pylist()
    assert len(dataset) >= 15  # 1 seed + 22 sampled, a few may be rejected
    assert {row[keys.SPLIT] for row in dataset} == {"train", "val", "test"}
    energies = [row[keys.ENERGY] for row in dataset]
    # water MP2/CBS is about -76.36 Eh = -2077.9 eV; sampled geometries lie within ~1 eV
    assert all(-2080.0 < e < -2076.0 for e in energies)
    validation = [row for row in dataset if row[keys.FORCE_VALIDATION]]
    assert 1 <= len(validation) <= 2
    for row in validation:
        forces = row[keys.FORCES]
        assert len(forces) == 3 and all(math.isfinite(c) for f in forces for c in f)
    summary = (study / "datasets" / "mp2_cbs.summary.txt").read_text()
    assert "failed" in summary


def test_labels_keep_components(study):
    chunks = sorted((study / "labels" / "mp2_cbs" / "water").glob("chunk-*.parquet"))
    assert chunks
    rows = pq.read_table(chunks[0]).to_pylist()
    assert all(row[keys.STATUS] == keys.STATUS_OK for row in rows)
    components = dict(rows[0]["components"])
    assert {"scf/cc-pvtz", "mp2_corl/cc-pvdz", "mp2_corl/cc-pvtz"} <= set(components)


def test_both_variants_evaluated(study):
    for run in ("energy", "weak"):
        metrics = json.loads((study / "results" / run / "metrics.json").read_text())
        assert metrics["n_energy"] >= 1
        assert 0 < metrics["energy_rmse"] < 5.0  # eV: a few epochs, but not garbage
        assert 0 < metrics["force_rmse"] < 50.0  # eV/A
        for png in ("parity_energy.png", "parity_forces.png", "learning_curve.png"):
            assert (study / "results" / run / png).stat().st_size > 1000
        md = json.loads((study / "results" / run / "md.json").read_text())
        assert md["runs"]


def test_summary_compares_the_variants(study):
    summary = (study / "results" / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| energy |")]
    assert rows and "| weak |" in summary
    assert "force RMSE" in summary
