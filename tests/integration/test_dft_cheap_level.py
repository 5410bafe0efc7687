"""A Psi4 DFT level as the cheap level (docs/configs/dft_cheap_level.yaml): its labels come
from chunked label jobs, the Delta variant over it is a tabled baseline (evaluated from the
labels, no MD), and its distilled student runs MD."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from workflow_helpers import dry_run_jobs, snakemake, write_config

REPO = Path(__file__).resolve().parents[2]
DFT_CONFIG = REPO / "docs" / "configs" / "dft_cheap_level.yaml"

pytestmark = pytest.mark.workflow


def test_the_documented_dft_config_plans_label_jobs_and_md_for_the_student_only(tmp_path):
    config = yaml.safe_load(DFT_CONFIG.read_text())
    assert config["cheap_level"]["reference"] == "dft_svp"
    assert config["references"]["dft_svp"]["backend"] == "psi4"
    write_config(tmp_path, config)
    jobs = dry_run_jobs(tmp_path, "--cores", "2", "--configfile", "config.yaml")
    # the DFT labels go through chunks and label jobs (planned once the checkpoints ran)
    for system in ("water", "ethanol"):
        for pool in ("sampled", "extra"):
            assert f"chunk_cheap[system={system}, pool={pool}]" in jobs
    assert not any(job.startswith("label_cheap[") for job in jobs)
    # delta (over the tabled DFT level) and the level alone: evaluated, no MD
    for run in ("delta", "cheap_level", "distilled", "energy", "finetune"):
        assert f"evaluate[run={run}]" in jobs
    assert "md[run=delta]" not in jobs and "md[run=cheap_level]" not in jobs
    assert {"md[run=distilled]", "md[run=energy]", "md[run=finetune]"} <= jobs
    assert "distill[run=distilled]" in jobs and "train[run=distilled]" not in jobs


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"student": {"teacher": "nosuch"}}, "training.variants.student.teacher: 'nosuch' is not"),
        (
            {"energy": {"losses": ["energy"]}, "student": {"teacher": "energy"}},
            "training.variants.student.teacher: 'energy' is no Delta model",
        ),
        (
            {"delta": {"baseline": "dft_svp", "losses": ["energy", "pitc"]}},
            "training.variants.delta.losses: pitc need the baseline",
        ),
    ],
)
def test_a_bad_student_or_tabled_variant_stops_the_dry_run_in_one_line(tmp_path, variants, message):
    config = yaml.safe_load(DFT_CONFIG.read_text())
    config["training"]["variants"] = variants
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", "config.yaml")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("pilip: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Job stats" not in proc.stdout + proc.stderr


def tiny_dft_study() -> dict:
    """The documented config, shrunk to water, a dozen configurations and a few epochs."""
    config = yaml.safe_load(DFT_CONFIG.read_text())
    config["systems"] = {"water": {"seed": "H2O"}}
    config["sampling"] = {
        "seed": 1,
        "generators": [
            {"kind": "rattle", "n": 12, "amplitude": 0.04},
            {"kind": "md", "n": 4, "temperature": 400, "interval": 10, "equilibration": 20},
        ],
    }
    config["labelling"].update(reference="mp2_dz", chunk_size=8)  # MP2/DZ: cheaper than CBS
    config["splits"] = {"train": 0.5, "val": 0.3, "test": 0.2}
    training = config["training"]
    training.update(epochs=3, minutes=1, batch_size=4)
    training["model_params"] = {"n_features": 8, "n_interactions": 1, "cutoff": 4.0}
    training["variants"]["distilled"].update(epochs=3, minutes=1)
    config["cheap_level"].update(extra_pool=1)
    config["cheap_level"]["pretrain"].update(epochs=3, minutes=1)
    config["md"].update(steps=40, trajectory_interval=10)
    return config


@pytest.mark.slow
@pytest.mark.psi4
def test_a_tiny_dft_cheap_level_study_runs(tmp_path):
    from pilip.reference.psi4_env import find_psi4_python

    try:
        find_psi4_python(None)
    except Exception as exc:  # no Psi4 interpreter: nothing to label with
        pytest.skip(f"no Psi4 interpreter: {exc}")
    write_config(tmp_path, tiny_dft_study())
    proc = snakemake(tmp_path, "--cores", "2", "--configfile", "config.yaml", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    chunks = sorted((tmp_path / "cheap" / "labels").glob("water.*/chunk-*.parquet"))
    assert {c.parent.name for c in chunks} == {"water.sampled", "water.extra"}
    rows = [r for c in chunks for r in pq.read_table(c).to_pylist()]
    assert rows and all(r["status"] == "ok" and len(r["forces"]) == 3 for r in rows)
    assert {r["program"] for r in rows} == {"psi4"}
    results = tmp_path / "results"
    delta = json.loads((results / "delta" / "metrics.json").read_text())
    assert delta["recipe"].startswith("Delta over") and "b3lyp/def2-svp" in delta["recipe"]
    assert delta["recipes"][0].get("tabled") and delta["force_rmse"] is not None
    assert not (results / "delta" / "md.json").exists()
    student = json.loads((results / "distilled" / "metrics.json").read_text())
    assert student["recipes"][0]["name"] == "distilled"
    assert json.loads((results / "distilled" / "md.json").read_text())["runs"]
    summary = (results / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| distilled | delta |"))
    assert "cannot run MD" in row
