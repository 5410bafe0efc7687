"""pilip train --baseline / --init end to end (tiny models, GFN2-xTB through tblite)."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from test_multifidelity import write_water

from pilip.cli import main
from pilip.potential.baselines import DeltaModel, resolve_baseline
from pilip.potential.checkpoint import load_model, read_checkpoint, save_checkpoint
from pilip.potential.data import VAL, load_dataset
from pilip.potential.evaluate import predict
from pilip.potential.metrics import energy_metrics
from pilip.potential.models import build_model
from pilip.reference.backends.xtb_backend import XTBBackend

pytest.importorskip("tblite")
CACHE_RESULTS = "baseline.results.jsonl"  # pilip label's results file beside baseline.parquet
torch.set_num_threads(1)

TINY = ["--n-features", "8", "--n-interactions", "1", "--cutoff", "4.0", "--no-progress"]


@pytest.fixture
def dataset(tmp_path):
    return write_water(tmp_path / "water.parquet", n_train=8, n_val=4)


def pilip_train(dataset, out, *extra):
    return main(["train", str(dataset), "--out", str(out), *TINY, *extra])


def val_rmse_rows(run):
    with open(run / "metrics.csv", newline="") as handle:
        return [float(r["val_energy_rmse"]) for r in csv.DictReader(handle)]


@pytest.fixture
def count_xtb(monkeypatch):
    """Counts tblite calculations; ``counter.forbid = True`` makes any further one fail."""
    real = XTBBackend._single_point

    class Counter:
        calls = 0
        forbid = False

    def counting(self, config, options, gradients):
        if Counter.forbid:
            raise AssertionError("the baseline was computed again")
        Counter.calls += 1
        return real(self, config, options, gradients)

    monkeypatch.setattr(XTBBackend, "_single_point", counting)
    return Counter


def test_delta_model_is_saved_with_its_baseline_and_selected_on_the_total(dataset, tmp_path):
    run = tmp_path / "delta"
    assert pilip_train(dataset, run, "--baseline", "gfn2-xtb", "--epochs", "3") == 0
    (record,) = read_checkpoint(run / "model.pt")["meta"]["recipes"]
    assert record["name"] == "delta" and record["baseline"]["method"] == "GFN2-xTB"
    assert record["baseline"]["program"] == "tblite"
    model, _ = load_model(run / "model.pt")
    assert isinstance(model, DeltaModel)
    # baseline + model against the reference labels reproduces the selection's best RMSE
    val = load_dataset(dataset)[VAL]
    predicted, _ = predict(model, val, torch.device("cpu"))
    rmse = energy_metrics(predicted, val.energy.numpy(), val.n_atoms.numpy())["energy_rmse"]
    assert rmse == pytest.approx(min(val_rmse_rows(run)), rel=1e-5)


def test_resume_reuses_the_cached_baseline(dataset, tmp_path, count_xtb):
    run = tmp_path / "delta"
    assert pilip_train(dataset, run, "--baseline", "gfn2-xtb", "--epochs", "1") == 0
    assert count_xtb.calls == 12  # every training and validation structure, once
    # killed during the labelling: the results file keeps what was finished
    lines = (run / CACHE_RESULTS).read_text().splitlines(keepends=True)
    (run / CACHE_RESULTS).write_text("".join(lines[:5]) + lines[5][:20])
    (run / "baseline.parquet").unlink()
    count_xtb.calls = 0
    assert pilip_train(dataset, run, "--baseline", "gfn2-xtb", "--epochs", "2") == 0
    assert count_xtb.calls == 7  # the rest, not the 5 finished
    count_xtb.forbid = True
    assert pilip_train(dataset, run, "--baseline", "gfn2-xtb", "--epochs", "3") == 0
    assert len(val_rmse_rows(run)) == 3  # resumed, not restarted


def test_a_delta_committee_computes_one_baseline_for_all_members(dataset, tmp_path, count_xtb):
    from pilip.potential.committee import Committee

    run = tmp_path / "delta"
    assert (
        pilip_train(dataset, run, "--baseline", "gfn2-xtb", "--epochs", "2", "--ensemble", "2") == 0
    )
    assert count_xtb.calls == 12  # every training and validation structure once, not per member
    model, meta = load_model(run / "model.pt")
    assert isinstance(model, DeltaModel) and isinstance(model.model, Committee)
    assert [m["recipes"] for m in meta["members"]] == [meta["recipes"]] * 2
    # baseline + committee mean against the reference labels: the RMSE the run recorded
    val = load_dataset(dataset)[VAL]
    predicted, _ = predict(model, val, torch.device("cpu"))
    rmse = energy_metrics(predicted, val.energy.numpy(), val.n_atoms.numpy())["energy_rmse"]
    assert rmse == pytest.approx(meta["val_energy_rmse"], rel=1e-5)


def test_weak_losses_with_a_baseline_compute_it_at_the_perturbed_geometries(
    dataset, tmp_path, count_xtb
):
    run = tmp_path / "delta_weak"
    args = ["--baseline", "gfn2-xtb", "--losses", "energy,pitc,pisc", "--epochs", "1"]
    assert pilip_train(dataset, run, *args, "--batch-size", "4") == 0
    # 12 labels, then B and C of each of the 8 training structures (A comes from the cache)
    assert count_xtb.calls == 12 + 2 * 8
    model, _ = load_model(run / "model.pt")
    assert isinstance(model, DeltaModel)


def test_fine_tuning_starts_exactly_at_the_checkpoint(dataset, tmp_path):
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    assert pilip_train(dataset, pre, "--epochs", "4") == 0
    best = read_checkpoint(pre / "model.pt")["meta"]["val_energy_rmse"]
    # a learning rate too small to move anything: epoch 1 shows the starting point
    args = ["--init", str(pre / "model.pt"), "--epochs", "1", "--lr", "1e-12"]
    assert main(["train", str(dataset), "--out", str(fine), "--no-progress", *args]) == 0
    assert val_rmse_rows(fine)[0] == pytest.approx(best, rel=1e-6)
    meta = read_checkpoint(fine / "model.pt")["meta"]
    assert meta["recipes"] == [{"name": "finetune", "init": str(pre / "model.pt")}]
    assert meta["config"]["model_params"]["n_features"] == 8  # the checkpoint's architecture


def test_fine_tuning_a_delta_model_on_new_labels(dataset, tmp_path):
    pre = tmp_path / "pre"
    assert pilip_train(dataset, pre, "--baseline", "gfn2-xtb", "--epochs", "2") == 0
    fine = tmp_path / "fine"
    args = ["--init", str(pre / "model.pt"), "--baseline", "gfn2-xtb", "--epochs", "1"]
    assert main(["train", str(dataset), "--out", str(fine), "--no-progress", *args]) == 0
    assert isinstance(load_model(fine / "model.pt")[0], DeltaModel)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--baseline", "gfn9-xtb"], "unknown baseline"),
        (["--baseline-labels", "x.parquet"], "needs --baseline"),
        (["--init", "missing.pt"], "no such checkpoint"),
        (["--init", "{pre}", "--model", "schnet"], "is a painn model"),
        (["--init", "{pre}", "--n-features", "16"], "another architecture"),
        (["--init", "{pre}", "--baseline", "gfn2-xtb"], "has no baseline"),
        (["--init", "{delta}"], "add --baseline gfn2-xtb"),
        (["--init", "{delta}", "--baseline", "gfn1-xtb"], "use the same baseline"),
    ],
)
def test_bad_multifidelity_input_is_one_line_before_training(
    dataset, tmp_path, capsys, extra, words
):
    pre, delta = tmp_path / "pre.pt", tmp_path / "delta.pt"
    model = build_model("painn", n_features=8, n_interactions=1, cutoff=4.0)
    save_checkpoint(pre, model=model, model_name="painn", meta={"config": {}, "elements": [1, 8]})
    spec = resolve_baseline("gfn2-xtb").specification()
    meta = {"config": {}, "elements": [1, 8], "recipes": [{"name": "delta", "baseline": spec}]}
    save_checkpoint(delta, model=model, model_name="painn", meta=meta)
    extra = [e.format(pre=pre, delta=delta) for e in extra]
    run = tmp_path / "run"
    capsys.readouterr()
    args = ["train", str(dataset), "--out", str(run), "--no-progress", "--epochs", "1", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err
    assert not (run / "model.pt").exists() and not (run / "baseline.parquet").exists()


def test_a_config_asking_for_another_model_than_init_is_refused(dataset, tmp_path, capsys):
    """A variant's (or training's) model is asked for as --model is: a MACE variant that names
    a PaiNN checkpoint as init would otherwise train PaiNN under its name."""
    pre = tmp_path / "pre.pt"
    model = build_model("painn", n_features=8, n_interactions=1, cutoff=4.0)
    save_checkpoint(pre, model=model, model_name="painn", meta={"config": {}, "elements": [1, 8]})
    config = tmp_path / "config.yaml"
    config.write_text(f"training:\n  variants:\n    v: {{model: schnet, init: {pre}}}\n")
    capsys.readouterr()
    args = ["train", str(dataset), "--out", str(tmp_path / "run"), "--config", str(config),
            "--variant", "v", "--epochs", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "is a painn model but --config" in err and "asks for schnet" in err
    assert "set model: painn there" in err and "\n" not in err


def test_psi4_is_refused_as_a_baseline_pointing_to_init(dataset, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text((Path(__file__).parents[2] / "config.yaml").read_text())
    args = ["--baseline", "mp2_cbs", "--config", str(config), "--epochs", "1"]
    assert pilip_train(dataset, tmp_path / "run", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "does not run in process" in err and "--init" in err


def test_evaluate_and_md_use_baseline_plus_model_without_a_flag(tmp_path):
    import json

    from ase import Atoms

    from pilip.potential.calculator import PilipCalculator

    dataset = write_water(tmp_path / "w.parquet", n_train=8, n_val=4, n_test=3)
    run = tmp_path / "delta"
    assert pilip_train(dataset, run, "--baseline", "gfn2-xtb", "--epochs", "2") == 0
    out = tmp_path / "ev"
    assert main(["evaluate", str(run / "model.pt"), str(dataset), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"].startswith("Delta over GFN2-xTB (tblite ")
    # the force RMSE is that of baseline + model, computed here through the calculator
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(dataset).to_pylist() if r["split"] == "test"]
    calc = PilipCalculator(run / "model.pt", device="cpu")
    errors = []
    for r in rows:
        atoms = Atoms(numbers=r["numbers"], positions=r["positions"])
        atoms.calc = calc
        errors.append(atoms.get_forces() - np.array(r["forces"]))
    rmse = float(np.sqrt(np.mean(np.square(errors))))
    assert metrics["force_rmse"] == pytest.approx(rmse, rel=1e-5)
    md = ["md", str(run / "model.pt"), str(dataset), "--out", str(out), "--steps", "4"]
    assert main([*md, "--device", "cpu"]) == 0
