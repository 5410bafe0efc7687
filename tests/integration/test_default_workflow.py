"""The whole DAG through Snakemake on a tiny study (tests/e2e/config.yaml), with real Psi4.

Checks the contents a user reads: labels with MP2/CBS energies that match the components,
a dataset with splits and force-validation rows, the training variants (energy, weak, the
multi-fidelity delta and finetune, and delta's distilled student), the cheap level's labels and
pretraining, metrics in range, MD results, the summary table and the plots.
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
from pilip.reference.psi4_env import find_psi4_python

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


def test_every_variant_and_the_cheap_level_evaluated(study):
    for run in ("energy", "weak", "delta", "finetune", "distilled", "cheap_level"):
        metrics = json.loads((study / "results" / run / "metrics.json").read_text())
        assert metrics["n_energy"] >= 1
        assert 0 < metrics["energy_rmse"] < 5.0  # eV: a few epochs, but not garbage
        assert 0 < metrics["force_rmse"] < 50.0  # eV/A
        pngs = ("parity_energy.png", "parity_forces.png")
        for png in (*pngs, "learning_curve.png"):  # the cheap level's says it has none
            assert (study / "results" / run / png).stat().st_size > 1000
        md = json.loads((study / "results" / run / "md.json").read_text())
        assert md["runs"]
        assert md["steps_per_s"] > 0 and "hr_mae" in md  # Fu et al.'s measures
        assert all((r["hr_mae"] is None) == (r["hr_frames"] == 0) for r in md["runs"])
        # each job's time and memory (Snakemake's benchmark: tables), under logs/benchmarks/
        stages = ("evaluate", "md") + (("train",) if run != "cheap_level" else ())
        for stage in stages:
            table = (study / "logs" / "benchmarks" / stage / f"{run}.tsv").read_text()
            assert table.startswith("s\th:m:s\tmax_rss")


def test_summary_compares_the_variants(study):
    summary = (study / "results" / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| energy |")]
    assert rows and "| weak |" in summary
    assert "force RMSE" in summary
    assert "| MD stable | MD first failure (ps) | h(r) MAE | MD steps/s |" in summary
    delta = next(line for line in summary.splitlines() if line.startswith("| delta |"))
    assert "Delta over GFN2-xTB" in delta
    finetune = next(line for line in summary.splitlines() if line.startswith("| finetune |"))
    assert "fine-tuned from models/pretrain/model.pt" in finetune
    assert "GFN2-xTB (tblite" in summary and "alone |" in summary
    student = next(line for line in summary.splitlines() if line.startswith("| distilled |"))
    assert "distilled from models/delta/model.pt (Delta over GFN2-xTB" in student
    # the student beside its teacher, with both MD speeds
    pair = next(line for line in summary.splitlines() if line.startswith("| distilled | delta |"))
    assert "not run" not in pair and "x the teacher's" in pair


def test_the_student_learnt_from_the_extra_pool_and_the_teachers_md(study):
    pool = pq.read_table(study / "models" / "distilled" / "pool.parquet").to_pylist()
    generators = {row[keys.GENERATOR] for row in pool}
    assert "frames" in generators  # delta's MD frames (step 0, a test structure, left out)
    assert all(json.loads(r[keys.GENERATOR_PARAMS])["step"] > 0 for r in pool
               if r[keys.GENERATOR] == "frames")  # fmt: skip
    extra = pq.read_table(study / "cheap" / "water.extra.parquet").column(keys.ID).to_pylist()
    assert set(extra) <= {row[keys.ID] for row in pool}
    meta = json.loads((study / "results" / "distilled" / "metrics.json").read_text())
    assert meta["recipes"][0]["reference"]["weight"] == 1.0


def test_cheap_level_labels_every_configuration_and_its_extra_pool(study):
    sampled = pq.read_table(study / "configurations" / "water.parquet").num_rows
    extra = pq.read_table(study / "cheap" / "water.extra.parquet").num_rows
    assert extra >= sampled - 1  # extra_pool 1: as many again, minus the seed geometry
    for pool, n in (("sampled", sampled), ("extra", extra)):
        labels = pq.read_table(study / "cheap" / f"water.{pool}.labels.parquet").to_pylist()
        assert len(labels) == n
        assert all(r["status"] == "ok" and r["forces"] for r in labels)
    assert (study / "models" / "pretrain" / "model.pt").is_file()
