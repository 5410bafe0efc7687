"""MACE as a pilip model: what is MACE-specific beyond the physics, loss and static-shape suites
that run on every model of the registry. Every recipe and command on a tiny water dataset,
its hyper-parameters read off the data, and the export that mace-torch's own tools read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from model_batches import molecules, to_batch
from test_train import water_configurations, write_dataset

from pilip import keys
from pilip.cli import main
from pilip.errors import PilipError
from pilip.potential.calculator import PilipCalculator
from pilip.potential.checkpoint import load_model, read_checkpoint
from pilip.potential.forces import energy_and_forces
from pilip.potential.models import build_model

pytest.importorskip("mace")
torch.set_num_threads(1)

# a tiny MACE: one interaction, 8 channels, correlation 2
TINY = ["--model", "mace", "--n-features", "8", "--n-interactions", "1", "--cutoff", "4.0"]
COMMON = ["--device", "cpu", "--no-progress", "--batch-size", "4", "--seed", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A water dataset and MACE runs on it: energy + weak losses in float32; energies and
    forces in float64; a fine-tune of the latter."""
    root = tmp_path_factory.mktemp("mace")
    dataset = root / "water.parquet"
    write_dataset(dataset)
    weak, forces, tuned = root / "weak", root / "forces", root / "tuned"
    args = [*TINY, *COMMON, "--epochs", "2"]
    assert main(["train", str(dataset), "--out", str(weak), *args, "--losses",
                 "energy,pitc,pisc", "--dtype", "float32", "--eps", "0.01"]) == 0  # fmt: skip
    assert main(["train", str(dataset), "--out", str(forces), *args, "--losses",
                 "energy,forces", "--dtype", "float64"]) == 0  # fmt: skip
    assert main(["train", str(dataset), "--out", str(tuned), "--init",
                 str(forces / "model.pt"), *COMMON, "--epochs", "1", "--dtype", "float64",
                 "--lr", "1e-4"]) == 0  # fmt: skip
    return {"dataset": dataset, "weak": weak, "forces": forces, "tuned": tuned}


def water(n: int = 4) -> list[Atoms]:
    return [Atoms("OHH", positions=p) for p in water_configurations(n, seed=9)]


def test_runs_record_the_hyper_parameters_read_off_the_data(runs):
    for name, dtype in (("weak", torch.float32), ("forces", torch.float64)):
        model, meta = load_model(runs[name] / "model.pt")
        recorded = json.loads((runs[name] / "config.json").read_text())["model_params"]
        assert recorded["elements"] == [1, 8] == meta["hparams"]["elements"]
        # water inside a 4 A cutoff: every atom sees the other two
        assert recorded["avg_num_neighbors"] == pytest.approx(2.0)
        assert recorded["n_features"] == 8 and recorded["correlation"] == 2
        assert next(model.parameters()).dtype == dtype
        assert meta["model"] == "mace"
    metrics = (runs["weak"] / "metrics.csv").read_text().splitlines()
    assert "train_pitc" in metrics[0] and len(metrics) == 3  # header + 2 epochs


def test_finetune_starts_from_the_checkpoints_mace(runs):
    pretrained = read_checkpoint(runs["forces"] / "model.pt")["model"]
    tuned = read_checkpoint(runs["tuned"] / "model.pt")
    assert tuned["model"]["name"] == "mace"
    assert tuned["model"]["hparams"] == pretrained["hparams"]
    assert [r["name"] for r in tuned["meta"]["recipes"]] == ["finetune"]


def test_evaluate_md_and_calculator_read_a_mace_checkpoint(runs, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", str(runs["forces"] / "model.pt"), str(runs["dataset"]),
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_name"] == "mace" and np.isfinite(metrics["force_rmse"])
    md = tmp_path / "md"
    options = ["--device", "cpu", "--steps", "10", "--trajectory-interval", "5"]
    assert main(["md", str(runs["forces"] / "model.pt"), str(runs["dataset"]), "--out", str(md),
                 *options]) == 0  # fmt: skip
    assert json.loads((md / "md.json").read_text())["n_runs"] == 1
    model, _ = load_model(runs["forces"] / "model.pt")
    for atoms in water(2):
        atoms.calc = PilipCalculator(runs["forces"] / "model.pt", device="cpu")
        energy, forces = energy_and_forces(model, to_batch([atoms]))
        assert atoms.get_potential_energy() == pytest.approx(float(energy[0]), abs=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), forces.numpy(), atol=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exported_model_gives_pilips_energies_and_forces_in_mace_calculator(runs, tmp_path,
                                                                            dtype):  # fmt: skip
    from mace.calculators import MACECalculator

    checkpoint = runs["forces"] / "model.pt"
    exported = tmp_path / "water.model"
    assert main(["export-model", str(checkpoint), "--format", "mace", "-o", str(exported),
                 "--dtype", dtype]) == 0  # fmt: skip
    mace_calc = MACECalculator(model_paths=str(exported), device="cpu", default_dtype=dtype)
    pilip_calc = PilipCalculator(checkpoint, device="cpu")
    tolerance = {"float64": (1e-8, 1e-8), "float32": (2e-3, 1e-4)}[dtype]  # eV, eV/A
    for atoms in water(3):
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = mace_calc, pilip_calc
        assert abs(a.get_potential_energy()) > 100.0  # totals: the per-element energies in
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(),
                                                         abs=tolerance[0])  # fmt: skip
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=tolerance[1])


def test_export_refuses_other_models_and_delta_models_in_one_line(runs, tmp_path, capsys):
    from pilip.potential.checkpoint import save_checkpoint

    painn = tmp_path / "painn.pt"
    save_checkpoint(painn, model=build_model("painn", n_features=8), model_name="painn",
                    meta={"config": {}})  # fmt: skip
    delta = tmp_path / "delta.pt"
    payload = read_checkpoint(runs["forces"] / "model.pt")
    payload["meta"]["recipes"] = [{"name": "delta", "baseline": {"method": "GFN2-xTB"}}]
    torch.save(payload, delta)
    for path, words in ((painn, "painn model"), (delta, "distil")):
        assert main(["export-model", str(path), "--format", "mace", "-o",
                     str(tmp_path / "x.model")]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.model").exists()


def test_delta_over_gfn2_xtb_trains_and_evaluates(runs, tmp_path):
    pytest.importorskip("tblite")
    run = tmp_path / "delta"
    assert main(["train", str(runs["dataset"]), "--out", str(run), *TINY, *COMMON, "--epochs",
                 "1", "--baseline", "gfn2-xtb", "--dtype", "float64"]) == 0  # fmt: skip
    _, meta = load_model(run / "model.pt")
    assert meta["model"] == "mace" and [r["name"] for r in meta["recipes"]] == ["delta"]
    out = tmp_path / "eval"
    assert main(["evaluate", str(run / "model.pt"), str(runs["dataset"]), "--out", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    # the cheap level alone, with a (zero) MACE network built for the data's elements
    alone = tmp_path / "xtb"
    assert main(["baseline-model", str(runs["dataset"]), "--baseline", "gfn2-xtb", "--model",
                 "mace", "--out", str(alone)]) == 0  # fmt: skip
    _, meta = load_model(alone / "model.pt")
    assert meta["hparams"]["elements"] == [1, 8]


def test_elements_outside_the_model_are_refused_in_one_line():
    model = build_model("mace", n_features=8, n_interactions=1, elements=[1, 8])
    with pytest.raises(PilipError, match=r"element\(s\) \[6\] are not among .* \[1, 8\]"):
        model(to_batch(molecules(("CH3CH2OH",))))
    with pytest.raises(PilipError, match="1..118"):
        build_model("mace", elements=[0, 1])


def test_default_elements_and_neighbours_without_data():
    model = build_model("mace")
    assert model.hparams()["elements"] == [1, 6, 7, 8]
    assert model.hparams()["avg_num_neighbors"] > 0
    # elements are sorted and deduplicated, so the one-hot columns do not depend on order
    a = build_model("mace", elements=[8, 1, 1], n_features=8)
    assert a.hparams()["elements"] == [1, 8]


def test_padding_atoms_have_no_embedding_and_no_energy():
    torch.manual_seed(0)
    model = build_model("mace", n_features=8, n_interactions=2, dtype="float64")
    batch = to_batch(molecules(("CH3CH2OH", "H2O")))
    padded = {
        keys.NUMBERS: torch.cat([batch[keys.NUMBERS], torch.zeros(2, dtype=torch.long)]),
        keys.POSITIONS: torch.cat(
            [batch[keys.POSITIONS], torch.tensor([[1000.0, 0, 0], [2000.0, 0, 0]])]
        ),
        keys.BATCH: torch.cat([batch[keys.BATCH], torch.tensor([2, 2])]),
        keys.N_ATOMS: torch.cat([batch[keys.N_ATOMS], torch.tensor([2])]),
    }
    energies = model.network_energy(padded)
    torch.testing.assert_close(energies[:2], model.network_energy(batch), rtol=1e-12, atol=0)
    assert float(energies[2].detach()) == 0.0


@pytest.mark.slow
def test_exported_model_compiles_for_lammps_and_gives_pilips_energies(runs, tmp_path):
    """mace-torch's LAMMPS export (TorchScript of the whole model, what openmm-ml does too)
    accepts the exported file; the compiled model gives pilip's energies and forces."""
    import subprocess
    import sys

    checkpoint = runs["forces"] / "model.pt"
    exported = tmp_path / "water.model"
    assert main(["export-model", str(checkpoint), "--format", "mace", "-o", str(exported)]) == 0
    script = "from mace.cli.create_lammps_model import main; main()"
    subprocess.run([sys.executable, "-c", script, str(exported), "--head", "Default"],
                   check=True, capture_output=True, cwd=tmp_path)  # fmt: skip
    compiled = torch.jit.load(str(exported) + "-lammps.pt")
    model, _ = load_model(checkpoint)
    for atoms in water(2):  # LAMMPS passes one structure
        batch = to_batch([atoms])
        data = model.mace_inputs(batch)
        data["positions"] = data["positions"].detach().clone().requires_grad_(True)
        out = compiled(data, torch.ones(len(atoms), dtype=torch.float64))
        energy, forces = energy_and_forces(model, batch)
        torch.testing.assert_close(out["total_energy_local"].detach(), energy, rtol=0, atol=1e-8)
        torch.testing.assert_close(out["forces"], forces, rtol=0, atol=1e-8)
