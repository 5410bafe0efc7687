"""pilip evaluate: the right rows count, the numbers match by hand, files and errors are right.

The reference labels are the model's own predictions plus known offsets, so every metric is
known exactly; rows that must not count (training rows, force-validation energies) carry huge
offsets that would show up in any metric that wrongly included them.
"""

import json

import numpy as np
import pytest
import torch
from model_batches import molecules, to_batch

from pilip.cli import main
from pilip.potential.checkpoint import save_checkpoint
from pilip.potential.evaluate import METRIC_KEYS, read_evaluation_sets
from pilip.potential.forces import energy_and_forces
from pilip.potential.models import build_model
from pilip.tables import configurations_from_atoms, dataset_table, write_table

torch.set_num_threads(1)

# row: (molecule, split, force_validation, energy offset eV, force offset eV/A or None)
ROWS = [
    ("H2O", "test", False, 0.03, None),
    ("CH4", "test", False, -0.04, None),
    ("CH3CH2OH", "test", False, 0.05, 0.2),  # an imported test row with forces: counts twice
    ("H2O", "train", False, 100.0, 50.0),  # trained on: must never count
    ("CH4", "val", False, 100.0, None),
    ("H2O", "test", True, 100.0, -0.1),  # force validation: forces count, energy does not
    ("CH4", "train", True, 100.0, 0.3),
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(
        "schnet", n_features=16, n_filters=16, n_rbf=8, n_interactions=2, dtype="float64"
    ).eval()


@pytest.fixture
def files(tmp_path, model):
    structures = molecules(tuple(r[0] for r in ROWS), seed=1)
    energy, forces = energy_and_forces(model, to_batch(structures))
    forces = forces.numpy()
    ref_energy, ref_forces, start = [], [], 0
    for (_, _, _, de, df), atoms in zip(ROWS, structures, strict=True):
        n = len(atoms)
        ref_energy.append(float(energy[len(ref_energy)]) + de)
        ref_forces.append(None if df is None else forces[start : start + n] + df)
        start += n
    configurations = configurations_from_atoms(
        structures, system=[r[0] for r in ROWS], generator="rattle"
    )
    table = dataset_table(
        configurations,
        ref_energy,
        ref_forces,
        reference=["cbs" if not r[2] else "dz" for r in ROWS],
        split=[r[1] for r in ROWS],
        force_validation=[r[2] for r in ROWS],
    )
    dataset = write_table(table, tmp_path / "dataset.parquet", "dataset", {"test": True})
    checkpoint = tmp_path / "run" / "model.pt"
    meta = {
        "elements": [1, 6, 8],
        "config": {"losses": ["energy", "pitc"], "w_energy": 1.0, "w_pitc": 1.2, "eps": 0.01},
        "best_epoch": 2,
    }
    save_checkpoint(checkpoint, model=model, model_name="schnet", meta=meta)
    log = tmp_path / "run" / "metrics.csv"
    log.write_text(
        "epoch,wall_time_s,lr,train_energy,train_pitc,train_total,val_energy_rmse,"
        "val_energy_mae,val_energy_rmse_mev_per_atom,val_energy_mae_mev_per_atom,best\n"
        "1,10.0,1e-3,1.5,0.5,2.0,0.30,0.25,50.0,40.0,1\n"
        "2,20.5,1e-3,0.8,0.2,1.0,0.20,0.15,30.0,20.0,1\n"
        "3,31.0,1e-3,0.4,0.1,0.5,0.25,0.20,35.0,25.0,0\n"
    )
    return {"dataset": dataset, "checkpoint": checkpoint, "log": log, "dir": tmp_path}


def test_rows_selected_for_energies_and_forces(files):
    sets = read_evaluation_sets(files["dataset"])
    assert len(sets.energy.structures) == 3  # test split, not force validation
    assert sets.energy.system == ["H2O", "CH4", "CH3CH2OH"]
    assert len(sets.forces.structures) == 3  # ethanol (test) + both force-validation rows
    assert sets.forces.system == ["CH3CH2OH", "H2O", "CH4"]


def test_collected_force_validation_rows_count_for_energies(tmp_path):
    """pilip collect puts the training reference's energy on force-validation rows (their forces
    come from another reference, named in the provenance): such test rows count for energies."""
    structures = molecules(("H2O", "CH4", "H2O"), seed=2)
    configurations = configurations_from_atoms(structures, system=["a", "b", "c"], generator="x")
    forces = [None, None, np.zeros((3, 3))]
    table = dataset_table(
        configurations,
        [1.0, 2.0, 3.0],
        forces,
        reference="cbs",
        split=["train", "test", "test"],
        force_validation=[False, False, True],
    )
    provenance = {"force_validation_reference": "dz"}
    path = write_table(table, tmp_path / "dataset.parquet", "dataset", provenance)
    sets = read_evaluation_sets(path)
    assert sets.energy.system == ["b", "c"]
    assert sets.forces.system == ["c"]
    assert sets.forces.reference == ["dz"]


def test_evaluate_metrics_by_hand_and_files(files):
    out = files["dir"] / "results"
    argv = ["evaluate", str(files["checkpoint"]), str(files["dataset"]), "--out", str(out)]
    code = main([*argv, "--device", "cpu"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    offsets = np.array([0.03, -0.04, 0.05])  # predicted - reference = -offset
    assert metrics["energy_rmse"] == pytest.approx(np.sqrt(np.mean(offsets**2)), abs=1e-9)
    assert metrics["energy_mae"] == pytest.approx(0.04, abs=1e-9)
    per_atom = 1000 * offsets / np.array([3, 5, 9])
    assert metrics["energy_mae_mev_per_atom"] == pytest.approx(np.mean(np.abs(per_atom)))
    # force components: 9 atoms x 3 at 0.2, 3 x 3 at 0.1, 5 x 3 at 0.3
    sq = (27 * 0.2**2 + 9 * 0.1**2 + 15 * 0.3**2) / 51
    assert metrics["force_rmse"] == pytest.approx(np.sqrt(sq), abs=1e-9)
    assert metrics["force_mae"] == pytest.approx((27 * 0.2 + 9 * 0.1 + 15 * 0.3) / 51)
    assert metrics["force_rmse_per_element"]["O"] == pytest.approx(
        np.sqrt((3 * 0.04 + 3 * 0.01) / 6)
    )
    assert metrics["n_energy"] == 3
    assert metrics["n_force_structures"] == 3
    assert metrics["n_force_components"] == 51
    assert metrics["units"]["energy_rmse"] == "eV"
    assert metrics["units"]["force_rmse"] == "eV/A"
    assert metrics["force_reference"] == ["cbs", "dz"]
    assert metrics["energy_reference"] == ["cbs"]
    assert metrics["train_time_s"] == pytest.approx(31.0)
    assert metrics["epochs"] == 3 and metrics["best_epoch"] == 2
    assert metrics["losses"] == ["energy", "pitc"]
    assert metrics["loss_weights"] == {"energy": 1.0, "pitc": 1.2}
    assert metrics["model_name"] == "schnet"
    assert metrics["energy_rmse_per_system"]["CH4"] == pytest.approx(0.04, abs=1e-9)
    for name in ("parity_energy.png", "parity_forces.png", "learning_curve.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert metrics["plots"]["learning_curve"] == "learning_curve.png"


def test_missing_dataset_is_a_one_line_error_and_writes_nothing(files, capsys):
    out = files["dir"] / "nothing"
    code = main(["evaluate", str(files["checkpoint"]), "missing.parquet", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "missing.parquet" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_dataset_with_an_element_the_model_never_saw_is_refused(files, model, capsys):
    checkpoint = files["dir"] / "ho" / "model.pt"
    save_checkpoint(checkpoint, model=model, model_name="schnet", meta={"elements": [1, 8]})
    out = files["dir"] / "ho-results"
    code = main(["evaluate", str(checkpoint), str(files["dataset"]), "--out", str(out)])
    assert code == 2
    assert "element(s) C unknown to the model" in capsys.readouterr().err
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize(("trained_on", "warned"), [(["cbs"], False), (["mp2/cbs"], True)])
def test_energies_of_another_reference_than_the_training_data_are_flagged(
    files, model, capsys, trained_on, warned
):
    checkpoint = files["dir"] / "other" / "model.pt"
    meta = {"elements": [1, 6, 8], "reference": trained_on}
    save_checkpoint(checkpoint, model=model, model_name="schnet", meta=meta)
    out = files["dir"] / "other-results"
    assert main(["evaluate", str(checkpoint), str(files["dataset"]), "--out", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_reference"] == trained_on and metrics["energy_reference"] == ["cbs"]
    if warned:
        assert (
            len(err) == 1 and "test energies of reference cbs but the model was trained" in err[0]
        )
        assert "mp2/cbs" in err[0] and "compare different references" in err[0]
    else:
        assert err == []


def test_a_model_without_training_log_gets_a_figure_that_says_so(files, tmp_path):
    """Every evaluated run has the same files (the workflow's one evaluate rule relies on it);
    an untrained model's learning-curve figure says there is none, and the report shows n/a."""
    from pilip.report import write_summary

    out = tmp_path / "untrained"
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(files["checkpoint"].read_bytes())  # no metrics.csv
    args = ["evaluate", str(model_dir / "model.pt"), str(files["dataset"]), "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["plots"]["learning_curve_trained"] is False
    summary = write_summary([out], tmp_path / "summary.md")
    assert "learning curve](" not in summary and "| n/a |" in summary
