"""MD stability: a stable potential stays stable, broken ones are caught at the right time."""

import math

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes

from pilip.potential.md import MDSettings, bonded_pairs, run_langevin, write_trajectory


class BondCalculator(Calculator):
    """Harmonic springs on the starting bonds plus a constant outward force ``push`` (eV/A).

    ``push = 0`` is a stable potential; ``push > 0`` pulls every bond apart at constant force.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, atoms: Atoms, k: float = 30.0, push: float = 0.0, nan_after: int = -1):
        super().__init__()
        self.pairs, self.d0 = bonded_pairs(atoms)
        self.k, self.push, self.nan_after, self.calls = k, push, nan_after, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        vec = self.atoms.positions[j] - self.atoms.positions[i]
        d = np.linalg.norm(vec, axis=1)
        energy = np.sum(0.5 * self.k * (d - self.d0) ** 2 - self.push * d)
        de_dd = self.k * (d - self.d0) - self.push
        grad = de_dd[:, None] * vec / d[:, None]  # dE/dr_j
        forces = np.zeros_like(self.atoms.positions)
        np.add.at(forces, j, -grad)
        np.add.at(forces, i, grad)
        self.calls += 1
        if 0 <= self.nan_after < self.calls:
            energy = float("nan")
        self.results = {"energy": float(energy), "forces": forces}


def test_bonded_pairs_of_ethanol_are_its_eight_bonds():
    pairs, lengths = bonded_pairs(molecule("CH3CH2OH"))
    assert len(pairs) == 8  # 5 C-H, 1 O-H, 1 C-C, 1 C-O
    assert np.all((lengths > 0.9) & (lengths < 1.6))


def test_stable_potential_stays_stable_and_thermostat_holds_temperature():
    atoms = molecule("CH3CH2OH")
    settings = MDSettings(temperature=300.0, timestep=0.5, steps=1500, friction=0.05, seed=1)
    result = run_langevin(atoms, BondCalculator(atoms), settings)
    assert result.stable and result.reason == "completed"
    assert result.steps_done == 1500
    assert result.time_ps == pytest.approx(0.75)
    assert result.time_to_failure_ps is None
    assert 0.0 < result.max_bond_deviation < 0.5
    # 21 degrees of freedom fluctuate strongly; the mean over 0.75 ps stays near the target
    assert 200.0 < result.mean_temperature_K < 400.0
    assert result.n_bonds == 8


def test_bond_pulled_apart_fails_at_the_analytic_time():
    # H2 at 0 K without friction, a constant outward force F on the bond: the bond grows by
    # (F / mu) t^2 / 2, so it passes the 0.5 A threshold at t = sqrt(2 * 0.5 A * mu / F).
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    push = 1.0  # eV/A
    mu = atoms.get_masses()[0] / 2
    expected_fs = math.sqrt(2 * 0.5 * mu / push) / units.fs
    settings = MDSettings(temperature=0.0, timestep=0.1, steps=1000, friction=0.0)
    result = run_langevin(atoms, BondCalculator(atoms, k=0.0, push=push), settings)
    assert not result.stable and result.reason == "bond"
    assert result.time_to_failure_ps * 1000 == pytest.approx(expected_fs, abs=0.11)
    assert result.steps_done < 1000
    assert result.max_bond_deviation > 0.5


def test_non_finite_energy_is_reported_as_unstable():
    atoms = molecule("H2O")
    settings = MDSettings(steps=100, timestep=0.5)
    result = run_langevin(atoms, BondCalculator(atoms, nan_after=20), settings)
    assert not result.stable and result.reason == "non-finite energy"
    assert result.steps_done < 100
    assert result.time_to_failure_ps == pytest.approx(result.steps_done * 0.5e-3)
    assert result.summary()["time_to_failure_ps"] == result.time_to_failure_ps


def test_trajectory_is_readable_by_ase(tmp_path):
    atoms = molecule("H2O")
    settings = MDSettings(steps=50, timestep=0.5, trajectory_interval=10)
    result = run_langevin(atoms, BondCalculator(atoms), settings)
    path = tmp_path / "md.extxyz"
    write_trajectory(result.frames, path)
    frames = ase.io.read(path, index=":")
    assert [f.info["step"] for f in frames] == [0, 10, 20, 30, 40, 50]
    assert frames[-1].info["time_fs"] == pytest.approx(25.0)
    assert frames[-1].get_chemical_symbols() == ["O", "H", "H"]
    assert np.isfinite(frames[-1].get_potential_energy())
    assert frames[-1].get_forces().shape == (3, 3)
    np.testing.assert_allclose(frames[-1].positions, result.frames[-1].positions, atol=1e-7)


def _model_and_dataset(tmp_path, splits):
    import torch
    from model_batches import molecules

    from pilip.potential.checkpoint import save_checkpoint
    from pilip.potential.models import build_model
    from pilip.tables import configurations_from_atoms, dataset_table, write_table

    torch.manual_seed(0)
    model = build_model("schnet", n_features=8, n_filters=8, n_rbf=8, n_interactions=1)
    checkpoint = tmp_path / "run" / "model.pt"
    save_checkpoint(checkpoint, model=model, model_name="schnet", meta={"elements": [1, 6, 8]})
    names = ("H2O", "H2O", "CH4", "CH4")
    structures = molecules(names, seed=2)
    configurations = configurations_from_atoms(structures, system=list(names), generator="rattle")
    table = dataset_table(configurations, [0.0] * 4, [None] * 4, reference="x", split=splits)
    return checkpoint, write_table(table, tmp_path / "data.parquet", "dataset", {})


def test_md_command_writes_summary_and_readable_trajectory(tmp_path):
    import json

    from pilip.cli import main

    checkpoint, dataset = _model_and_dataset(tmp_path, ["test", "test", "test", "train"])
    out = tmp_path / "md"
    options = "--device cpu --steps 20 --trajectory-interval 5 --starts 2 --seed 7".split()
    argv = ["md", str(checkpoint), str(dataset), "--out", str(out), *options]
    assert main(argv) == 0
    summary = json.loads((out / "md.json").read_text())
    # two H2O test rows, one CH4 test row (the other CH4 row is training data)
    assert summary["n_runs"] == 3
    assert [r["system"] for r in summary["runs"]] == ["CH4", "H2O", "H2O"]
    assert summary["settings"]["steps"] == 20 and summary["settings"]["seed"] == 7
    assert summary["settings"]["temperature"] == 300.0  # default kept
    assert summary["n_stable"] + sum(not r["stable"] for r in summary["runs"]) == 3
    frames = ase.io.read(out / "md.extxyz", index=":")
    assert {f.info["run"] for f in frames} == {0, 1, 2}
    assert len([f for f in frames if f.info["run"] == 1]) == 5  # steps 0, 5, 10, 15, 20
    assert frames[0].info["config_id"] == summary["runs"][0]["config_id"]


def test_md_command_without_test_rows_fails_cleanly(tmp_path, capsys):
    from pilip.cli import main

    checkpoint, dataset = _model_and_dataset(tmp_path, ["train", "train", "val", "train"])
    out = tmp_path / "md"
    assert main(["md", str(checkpoint), str(dataset), "--out", str(out)]) == 2
    assert "no test-split rows" in capsys.readouterr().err
    assert not out.exists()
    assert main(["md", str(checkpoint), str(dataset), "--out", str(out), "--steps", "0"]) == 2
