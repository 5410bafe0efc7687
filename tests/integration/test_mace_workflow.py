"""MACE through the whole DAG: a study whose `training.model` is mace (the pretraining run,
energy-only, Delta and the fine-tune from the pretraining run are MACE) with one PaiNN
variant beside it, trained, evaluated, run in MD and reported.

Labels are GFN2-xTB (no Psi4), the cheap level GFN1-xTB; one water seed, tiny models, two
epochs: about a minute on 2 cores. Skipped without mace-torch or tblite.
"""

from __future__ import annotations

import json

import pytest
import torch
from workflow_helpers import dry_run_jobs, snakemake, write_config

pytest.importorskip("mace")
pytest.importorskip("tblite")
pytestmark = [pytest.mark.workflow, pytest.mark.slow]

MACE_PARAMS = {"n_features": 8, "n_interactions": 1, "max_ell": 1, "n_rbf": 4,
               "radial_mlp": [8], "readout_mlp": 4, "cutoff": 4.0}  # fmt: skip
STUDY = {
    "systems": {"water": {"seed": "H2O"}},
    "sampling": {"seed": 3, "generators": [{"kind": "rattle", "n": 14, "amplitude": 0.04}]},
    "references": {"xtb": {"backend": "xtb", "method": "GFN2-xTB"}},
    "labelling": {"reference": "xtb", "chunk_size": 16},
    "splits": {"train": 0.6, "val": 0.2, "test": 0.2},
    "force_validation": {"reference": "xtb", "per_system": 2},
    "training": {
        "model": "mace",
        "model_params": MACE_PARAMS,
        "lr": 0.01,
        "epochs": 2,
        "minutes": None,
        "batch_size": 4,
        "threads": 1,
        "variants": {
            "energy": {"losses": ["energy"]},
            "delta": {"losses": ["energy"], "baseline": "gfn1-xtb"},
            "finetune": {"losses": ["energy"], "init": "models/pretrain/model.pt"},
            # another model: PaiNN's defaults and these, none of MACE's model_params
            "painn": {"model": "painn", "model_params": {"n_features": 6}, "lr": 0.001},
        },
    },
    "cheap_level": {
        "reference": "gfn1-xtb",
        "extra_pool": 1,
        "pretrain": {"losses": ["energy", "forces"], "epochs": 2},
    },
    "md": {"steps": 5, "trajectory_interval": 5},
}
RUNS = ("energy", "delta", "finetune", "painn", "cheap_level")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("mace_study")
    write_config(root, STUDY)
    proc = snakemake(root, "--cores", "2", "--configfile", "config.yaml", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert dry_run_jobs(root, "--configfile", "config.yaml") == set()
    return root


def checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_every_recipe_trains_mace_and_the_painn_variant_its_own_size(study):
    for run in ("pretrain", "energy", "delta", "finetune"):
        model = checkpoint(study / "models" / run / "model.pt")["model"]
        assert model["name"] == "mace", run
        assert model["hparams"]["n_features"] == 8 and model["hparams"]["n_rbf"] == 4
    painn = checkpoint(study / "models" / "painn" / "model.pt")["model"]
    assert painn["name"] == "painn"
    assert painn["hparams"]["n_features"] == 6
    assert painn["hparams"]["n_rbf"] == 20 and painn["hparams"]["cutoff"] == 5.0  # defaults


def test_every_run_is_evaluated_and_run_in_md(study):
    for run in RUNS:
        metrics = json.loads((study / "results" / run / "metrics.json").read_text())
        assert metrics["n_energy"] >= 1 and metrics["n_force_structures"] >= 1
        assert 0 < metrics["force_rmse"] < 50.0  # eV/A: two epochs, but finite
        md = json.loads((study / "results" / run / "md.json").read_text())
        assert md["runs"]
    names = {run: json.loads((study / "results" / run / "metrics.json").read_text())
             for run in RUNS}  # fmt: skip
    assert names["delta"]["model_name"] == "mace" and names["painn"]["model_name"] == "painn"


def test_the_summary_names_each_runs_model_and_recipe(study):
    summary = (study / "results" / "summary.md").read_text()
    rows: dict[str, list[str]] = {}
    for line in summary.splitlines():  # the first table's rows (later tables repeat the names)
        if line.startswith("| "):
            cells = [c.strip() for c in line.split("|")[1:-1]]
            rows.setdefault(cells[0], cells)
    assert rows["energy"][1] == "mace" and rows["energy"][-1] == "plain"
    assert rows["delta"][1] == "mace" and rows["delta"][-1].startswith("Delta over GFN1-xTB")
    assert rows["finetune"][1] == "mace"
    assert rows["finetune"][-1] == "fine-tuned from models/pretrain/model.pt"
    assert rows["painn"][1] == "painn"
    assert rows["cheap_level"][1] == "none" and rows["cheap_level"][-1].endswith("alone")
    assert "Baseline: **energy**" in summary  # the MACE energy-only run
