"""A config error stops `snakemake -n` with one line, before any job is planned or run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  reference: mp2_cbs ", "  reference: mp2cbs ", "labelling.reference: 'mp2cbs' is not"),
        ("method: mp2/cc-pvdz ", "method: mp2/cc-pvdzz ", "references.mp2_dz.method: basis set"),
    ],
)
def test_dry_run_refuses_a_misspelt_reference(tmp_path, old, new, message):
    """Issue 14, defect 10: `labelling.reference: mp2cbs` used to fail inside 16 label jobs."""
    assert_refused(tmp_path, old, new, message)


def assert_refused(tmp_path, old: str, new: str, message: str) -> None:
    """`snakemake -n` on config.yaml with ``old`` replaced by ``new`` stops with the one-line
    pilip error ``message`` and plans nothing."""
    text = (REPO / "config.yaml").read_text()
    assert old in text
    (tmp_path / "bad.yaml").write_text(text.replace(old, new, 1))
    done = subprocess.run(
        [str(BIN / "snakemake"), "-n", "-s", str(REPO / "Snakefile"), "--cores", "1",
         "--configfile", "bad.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"pilip: error: {tmp_path / 'bad.yaml'}: {message}" in done.stderr
    assert "Job stats" not in done.stdout + done.stderr  # nothing was planned


def test_dry_run_refuses_a_mace_fine_tune_of_the_painn_pretraining_run(tmp_path):
    """Fine-tuning keeps the checkpoint's architecture: a `model: mace` fine-tune variant of
    the PaiNN pretraining run would train PaiNN under its name (tests/unit/test_study_models.py
    has the other architecture checks)."""
    assert_refused(
        tmp_path,
        "      init: models/pretrain/model.pt\n    distilled:",
        "      init: models/pretrain/model.pt\n      model: mace\n    distilled:",
        "training.variants.finetune.model: mace, but variant finetune fine-tunes from",
    )


def test_training_unlabelled_feeds_the_weak_variants_only(tmp_path):
    """training.unlabelled is an input of the variants with a weak loss (pitc, pisc), not of
    the others; a variant's own `unlabelled` is its input whatever its losses."""
    from workflow_helpers import snakemake, write_config

    for name in ("pool.parquet", "own.parquet"):
        (tmp_path / name).touch()
    write_config(
        tmp_path,
        {
            "systems": {"water": {"seed": "H2O"}},
            "references": {"xtb": {"backend": "xtb", "method": "GFN2-xTB"}},
            "labelling": {"reference": "xtb"},
            "force_validation": {"enabled": False},
            "cheap_level": {"enabled": False},
            "training": {
                "unlabelled": "pool.parquet",
                "variants": {
                    "energy": {"losses": ["energy"]},
                    "weak": {"losses": ["energy", "pisc"]},
                    "own": {"losses": ["energy"], "unlabelled": "own.parquet"},
                },
            },
        },
    )
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", "config.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    inputs, job = {}, None  # run -> the "input:" line of its train job
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip()
        if line.endswith(":") and " " in line and line.split()[0] in ("rule", "localrule"):
            job = {} if line == "rule train:" else None
        elif job is not None and line.startswith(("input:", "wildcards:")):
            job[line.split(":")[0]] = line
            if "wildcards" in job:
                inputs[job["wildcards"].split("run=")[1]] = job.get("input", "")
    assert inputs.keys() == {"energy", "weak", "own"}, proc.stdout[-3000:]
    assert "pool.parquet" in inputs["weak"] and "own.parquet" not in inputs["weak"]
    assert "pool.parquet" not in inputs["energy"] and "own.parquet" not in inputs["energy"]
    assert "own.parquet" in inputs["own"] and "pool.parquet" not in inputs["own"]


def test_the_default_study_distils_delta_from_its_extra_pool_and_md_frames(tmp_path):
    """config.yaml's `distilled` (teacher: delta) is trained by rule distill, not train, on
    the extra pool and delta's MD trajectory, and evaluated, run in MD and reported."""
    from workflow_helpers import dry_run_jobs, snakemake

    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    jobs = dry_run_jobs(tmp_path, "--cores", "2", "--configfile", "config.yaml")
    runs = ("energy", "weak", "delta", "finetune", "distilled", "cheap_level")
    assert {f"evaluate[run={run}]" for run in runs} <= jobs
    assert {f"md[run={run}]" for run in runs} <= jobs
    assert "distill[run=distilled]" in jobs and "train[run=distilled]" not in jobs
    proc = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--configfile", "config.yaml")
    text = proc.stdout + proc.stderr
    command = next(line for line in text.splitlines() if "pilip distill " in line)
    assert command.split("pilip distill ")[1].split(" --out ")[0].split() == [
        "models/delta/model.pt",
        "cheap/ethanol.extra.parquet",
        "cheap/water.extra.parquet",
        "results/delta/md.extxyz",
    ]
    assert "--variant distilled" in command
    assert "--reference-dataset datasets/mp2_cbs.parquet" in command
