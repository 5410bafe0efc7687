"""Delta over a level that cannot run in process (a Psi4 DFT level): trained and evaluated from
labels tables, refused by MD and the calculator in one line.

The "DFT" labels here are made-up smooth energies and their exact forces, written as rows of
a labels table that Psi4's backend would have written for ``b3lyp/def2-svp``: no Psi4 runs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_multifidelity import write_water

from pilip.cli import main
from pilip.errors import PilipError
from pilip.potential.baselines import DeltaModel, resolve_baseline
from pilip.potential.calculator import PilipCalculator
from pilip.potential.checkpoint import load_model, read_checkpoint
from pilip.potential.data import VAL, load_dataset, structures_from_arrays
from pilip.potential.evaluate import predict
from pilip.reference import labels
from pilip.reference.labelling import read_configs

torch.set_num_threads(1)
LEVEL = "b3lyp/def2-svp"
TINY = ["--n-features", "8", "--n-interactions", "1", "--cutoff", "4.0", "--no-progress"]


def fake_dft(positions: np.ndarray) -> tuple[float, np.ndarray]:
    """A smooth made-up surface (eV) and its forces (eV/A): harmonic O-H bonds."""
    energy, forces = -2070.0, np.zeros_like(positions)
    for h in (1, 2):
        d = positions[h] - positions[0]
        r = np.linalg.norm(d)
        energy += 20.0 * (r - 0.96) ** 2
        grad = 40.0 * (r - 0.96) * d / r
        forces[h] -= grad
        forces[0] += grad
    return energy, forces


def write_labels(dataset, path, skip: int = 0):
    """A labels table of LEVEL for the dataset's structures (the first ``skip`` left out)."""
    provenance = resolve_baseline(LEVEL, tabled=True).backend.provenance()
    records = []
    for config in read_configs(dataset)[skip:]:
        energy, forces = fake_dft(np.asarray(config["positions"]))
        records.append(
            {
                **labels.missing_record(config["id"], provenance, ""),
                "status": "ok",
                "error": None,
                "energy": energy,
                "forces": forces.tolist(),
            }
        )
    labels.write_labels(labels.labels_table(records, LEVEL), path, provenance={"command": "test"})
    return path


@pytest.fixture
def dataset(tmp_path):
    return write_water(tmp_path / "water.parquet", n_train=8, n_val=4, n_test=3)


def test_a_delta_model_over_a_tabled_level_trains_and_evaluates_as_baseline_plus_model(
    dataset, tmp_path, capsys
):
    table = write_labels(dataset, tmp_path / "dft.parquet")
    run = tmp_path / "teacher"
    args = ["train", str(dataset), "--out", str(run), *TINY, "--epochs", "3", "--dtype",
            "float64", "--baseline", LEVEL, "--baseline-labels", str(table)]  # fmt: skip
    assert main(args) == 0
    (record,) = read_checkpoint(run / "model.pt")["meta"]["recipes"]
    assert record["tabled"] and record["baseline"]["program"] == "psi4"
    # evaluation: the network plus the tabled baseline, against the reference labels
    model, _ = load_model(run / "model.pt", baseline_labels=[table], structures=dataset)
    assert isinstance(model, DeltaModel)
    val = load_dataset(dataset)[VAL]
    predicted, _ = predict(model, val, torch.device("cpu"))
    network, _ = predict(model.model, val, torch.device("cpu"))
    bounds = val.offsets.numpy()
    baseline = [
        fake_dft(val.positions[a:b].numpy())[0]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    np.testing.assert_allclose(predicted, network + np.array(baseline), rtol=0, atol=1e-8)
    best = read_checkpoint(run / "model.pt")["meta"]["val_energy_rmse"]
    rmse = float(np.sqrt(np.mean((predicted - val.energy.numpy()) ** 2)))
    assert rmse == pytest.approx(best, rel=1e-6)
    out = tmp_path / "ev"
    command = ["evaluate", str(run / "model.pt"), str(dataset), "--out", str(out)]
    assert main([*command, "--baseline-labels", str(table)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"].startswith(f"Delta over {LEVEL} (psi4") and metrics["force_rmse"] > 0
    # without the tables: one line, for evaluate, md and the calculator alike
    capsys.readouterr()
    assert main(command) == 2
    assert "runs only from labels tables" in capsys.readouterr().err
    md = ["md", str(run / "model.pt"), str(dataset), "--out", str(out), "--steps", "2"]
    assert main(md) == 2
    err = capsys.readouterr().err.strip()
    assert "distill" in err and "\n" not in err
    with pytest.raises(PilipError, match="distill"):
        PilipCalculator(run / "model.pt", device="cpu")


def test_tabled_baseline_refusals_are_one_line_before_training(dataset, tmp_path, capsys):
    partial = write_labels(dataset, tmp_path / "part.parquet", skip=2)
    first = read_configs(dataset)[0]["id"]
    run = tmp_path / "run"
    base = ["train", str(dataset), "--out", str(run), *TINY, "--epochs", "1"]
    cases = [
        (["--baseline", LEVEL], "does not run in process"),
        (
            ["--baseline", LEVEL, "--baseline-labels", str(partial)],
            f"no row for 2 of the 12 structures (e.g. configuration {first}); label them: "
            f"pilip label TABLE --reference {LEVEL} --forces",
        ),
        (
            ["--baseline", LEVEL, "--baseline-labels", str(partial), "--losses", "energy,pitc"],
            "drop pitc and pisc",
        ),
    ]
    for extra, words in cases:
        capsys.readouterr()
        assert main([*base, *extra]) == 2, extra
        error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
        assert error.startswith("pilip train: error: ") and words in error, error
        assert not (run / "model.pt").exists()


def test_the_tabled_level_alone_is_a_baseline_model_evaluated_from_its_labels(
    dataset, tmp_path, capsys
):
    """The workflow's run `cheap_level` with a Psi4 cheap level: `pilip baseline-model` over
    the tabled level, evaluated with its labels; MD refuses it in one line."""
    table = write_labels(dataset, tmp_path / "dft.parquet")
    out = tmp_path / "alone"
    args = ["baseline-model", str(dataset), "--baseline", LEVEL, "--out", str(out)]
    assert main(args) == 2  # without labels a Psi4 level cannot be a baseline
    assert "--baseline-labels" in capsys.readouterr().err
    assert main([*args, "--baseline-labels", str(table)]) == 0
    (record,) = read_checkpoint(out / "model.pt")["meta"]["recipes"]
    assert record["alone"] and record["tabled"]
    results = tmp_path / "results"
    assert main(["evaluate", str(out / "model.pt"), str(dataset), "--out", str(results),
                 "--baseline-labels", str(table)]) == 0  # fmt: skip
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["recipe"].startswith(LEVEL) and metrics["recipe"].endswith(" alone")
    assert metrics["force_rmse"] is not None
    # the level alone: its forces are the labels' (the per-element energies add no force)
    model, _ = load_model(out / "model.pt", baseline_labels=[table], structures=dataset)
    test = read_configs(dataset)[-3:]
    numbers = [np.asarray(c["numbers"]) for c in test]
    positions = [np.asarray(c["positions"]) for c in test]
    _, forces = predict(model, structures_from_arrays(numbers, positions), torch.device("cpu"),
                        forces=True)  # fmt: skip
    expected = np.concatenate([fake_dft(p)[1] for p in positions])
    np.testing.assert_allclose(forces, expected, atol=1e-6)
    capsys.readouterr()
    assert main(["md", str(out / "model.pt"), str(dataset), "--out", str(tmp_path / "md"),
                 "--steps", "2", "--device", "cpu"]) == 2  # fmt: skip
    assert "distill" in capsys.readouterr().err
