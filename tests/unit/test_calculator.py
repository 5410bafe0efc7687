"""The ASE calculator: same numbers as the model, forces = -dE/dR, eV and eV/A at the boundary."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.test import calculate_numerical_forces
from model_batches import molecules, to_batch
from torch import nn

from pilip import keys
from pilip.errors import PilipError
from pilip.potential.calculator import PilipCalculator
from pilip.potential.checkpoint import save_checkpoint
from pilip.potential.devices import resolve_device
from pilip.potential.forces import energy_and_forces
from pilip.potential.models import build_model

torch.set_num_threads(1)


def small_schnet(dtype: str = "float64") -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        "schnet", n_features=16, n_filters=16, n_rbf=8, n_interactions=2, dtype=dtype
    )
    # realistic per-element offsets (eV) so that the absolute energy scale is tested too
    model.energy_shift.shift[1] = -13.6
    model.energy_shift.shift[6] = -1029.0
    model.energy_shift.shift[8] = -2040.0
    return model.eval()


class QuadraticModel(nn.Module):
    """E = offset + a * sum_i |r_i|^2 per structure: energies in eV, forces -2 a r in eV/A."""

    def __init__(self, a: float = 0.7, offset: float = -2079.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.offset = offset

    def forward(self, batch):
        per_atom = self.a * (batch[keys.POSITIONS] ** 2).sum(-1)
        n = batch[keys.N_ATOMS].shape[0]
        return per_atom.new_full((n,), self.offset).index_add(0, batch[keys.BATCH], per_atom)


def test_calculator_matches_the_model_called_on_a_batch():
    model = small_schnet()
    structures = molecules()
    energy, forces = energy_and_forces(model, to_batch(structures))
    calc = PilipCalculator(model, device="cpu")
    start = 0
    for i, atoms in enumerate(structures):
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(float(energy[i]), abs=1e-9)
        n = len(atoms)
        np.testing.assert_allclose(atoms.get_forces(), forces[start : start + n].numpy(), atol=1e-9)
        start += n


def test_forces_match_ase_finite_differences():
    atoms = molecules(("CH3CH2OH",), seed=3)[0]
    atoms.calc = PilipCalculator(small_schnet(), device="cpu")
    numerical = calculate_numerical_forces(atoms, eps=1e-4)
    analytic = atoms.get_forces()
    assert np.abs(analytic).max() > 1e-3  # the test would be empty for a flat model
    np.testing.assert_allclose(analytic, numerical, atol=1e-6)


def test_energy_and_forces_are_in_ev_and_ev_per_angstrom():
    # the model speaks eV and Angstrom; the calculator must pass them through unconverted
    # (no Hartree, no Bohr): E = -2079 + 0.7 sum r^2, F = -1.4 r
    atoms = Atoms("OH2", positions=[[0.0, 0.0, 0.1], [0.76, 0.0, -0.5], [-0.76, 0.0, -0.5]])
    atoms.calc = PilipCalculator(QuadraticModel(), device="cpu")
    expected = -2079.0 + 0.7 * np.sum(atoms.positions**2)
    assert atoms.get_potential_energy() == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), -1.4 * atoms.positions, rtol=1e-12)
    assert atoms.get_forces().dtype == np.float64


def test_checkpoint_path_loads_and_gives_the_same_numbers(tmp_path):
    model = small_schnet("float32")
    path = tmp_path / "model.pt"
    save_checkpoint(path, model=model, model_name="schnet", meta={"elements": [1, 6, 8]})
    atoms = molecule("CH3CH2OH")
    atoms.calc = PilipCalculator(path, device="cpu")
    energy, forces = energy_and_forces(model, to_batch([atoms], dtype=torch.float32))
    assert atoms.get_potential_energy() == pytest.approx(float(energy[0]), abs=1e-3)
    np.testing.assert_allclose(atoms.get_forces(), forces.numpy(), atol=1e-5)
    # offsets 2 C + 6 H + 1 O = -4179.6 eV plus a small network term
    assert -4200 < atoms.get_potential_energy() < -4160


def test_atoms_of_an_unknown_element_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, model=small_schnet(), model_name="schnet", meta={"elements": [1, 8]})
    atoms = molecule("CH4")
    atoms.calc = PilipCalculator(path, device="cpu")
    with pytest.raises(PilipError, match="not trained on element"):
        atoms.get_potential_energy()


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(PilipError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(PilipError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = small_schnet()
    atoms = molecule("CH3CH2OH")
    atoms.calc = PilipCalculator(model, device="cpu")
    e_cpu, f_cpu = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = PilipCalculator(small_schnet(), device="cuda")
    assert atoms.get_potential_energy() == pytest.approx(e_cpu, abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), f_cpu, atol=1e-8)
