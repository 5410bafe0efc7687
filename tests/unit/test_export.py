"""The TorchScript export for openmm-torch: nm in, kJ/mol out, the eager model's numbers at
geometries other than the one traced, both architectures; Delta models refused."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from pilip.errors import PilipError
from pilip.potential.calculator import PilipCalculator
from pilip.potential.checkpoint import save_checkpoint
from pilip.potential.export import export_torchscript, molecule_energy
from pilip.potential.models import build_model
from pilip.units import EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
ELEMENTS = [1, 6, 8]
HPARAMS = {
    "painn": {"n_features": 16, "n_rbf": 8, "n_interactions": 2},
    "schnet": {"n_features": 16, "n_filters": 16, "n_rbf": 8, "n_interactions": 2},
}


def checkpoint(tmp_path, name: str = "painn", dtype: str = "float64", meta=None):
    torch.manual_seed(0)
    model = build_model(name, dtype=dtype, cutoff=3.0, **HPARAMS[name])
    model.energy_shift.shift[1] = -13.6
    model.energy_shift.shift[6] = -1029.0
    model.energy_shift.shift[8] = -2040.0
    path = tmp_path / "model.pt"
    save_checkpoint(path, model=model, model_name=name, meta=meta or {"elements": ELEMENTS})
    return path


def scripted_energy_and_forces(module, positions_angstrom, dtype=torch.float64):
    """(eV, eV/A) of the exported module, called the way openmm-torch calls it (nm)."""
    positions = torch.tensor(positions_angstrom / NM_TO_ANGSTROM, dtype=dtype, requires_grad=True)
    energy = module(positions)
    (gradient,) = torch.autograd.grad(energy, positions)
    forces = -gradient.double().numpy() / (EV_TO_KJ_PER_MOL * NM_TO_ANGSTROM)
    return float(energy.detach()) / EV_TO_KJ_PER_MOL, forces


@pytest.mark.parametrize("name", ["painn", "schnet"])
def test_the_scripted_module_gives_the_calculator_numbers(tmp_path, name):
    path = checkpoint(tmp_path, name)
    atoms = molecule("CH3CH2OH")  # its H...H pairs reach beyond the 3 A cutoff
    export_torchscript(path, atoms.numbers, tmp_path / "model.ts")
    module = torch.jit.load(str(tmp_path / "model.ts"))
    atoms.calc = PilipCalculator(path, device="cpu")
    rng = np.random.default_rng(0)
    for _ in range(2):  # geometries other than the one traced
        atoms.positions = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
        energy, forces = scripted_energy_and_forces(module, atoms.positions)
        assert abs(energy) > 1e3  # the per-element offsets are in
        assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-10)


def test_a_float32_model_keeps_its_total_in_float64(tmp_path):
    path = checkpoint(tmp_path, dtype="float32")
    atoms = molecule("H2O")
    module = export_torchscript(path, atoms.numbers, tmp_path / "model.ts")
    atoms.calc = PilipCalculator(path, device="cpu")
    # openmm-torch hands float32 positions on single/mixed precision platforms
    energy, forces = scripted_energy_and_forces(module, atoms.positions, torch.float32)
    # float32 network term (~1 eV); the -2067 eV of offsets summed in float64 as pilip does
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-5)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-5)


def test_torch_export_accepts_the_same_module(tmp_path):
    path = checkpoint(tmp_path)
    atoms = molecule("H2O")
    module = molecule_energy(path, atoms.numbers)
    positions = torch.tensor(atoms.positions / NM_TO_ANGSTROM)
    program = torch.export.export(module, (positions,))
    with torch.no_grad():
        assert float(program.module()(positions)) == pytest.approx(
            float(module(positions)), abs=1e-6
        )


def test_atoms_of_unknown_elements_are_refused(tmp_path):
    path = checkpoint(tmp_path, meta={"elements": [1, 8]})
    with pytest.raises(PilipError, match="not trained on element.* C"):
        export_torchscript(path, [6, 1, 1, 1, 1], tmp_path / "model.ts")
    assert not (tmp_path / "model.ts").exists()


def test_a_delta_model_over_xtb_is_refused_with_the_way_out(tmp_path):
    pytest.importorskip("tblite")
    from pilip.potential.baselines import resolve_baseline

    spec = resolve_baseline("gfn2-xtb").specification()
    meta = {"elements": ELEMENTS, "recipes": [{"name": "delta", "baseline": spec}]}
    path = checkpoint(tmp_path, meta=meta)
    with pytest.raises(PilipError, match="pilip distill"):
        export_torchscript(path, [8, 1, 1], tmp_path / "model.ts")


def test_pilip_export_model_writes_the_torchscript_module(tmp_path, capsys):
    from ase.io import write

    from pilip.cli import main

    path = checkpoint(tmp_path)
    atoms = molecule("CH3CH2OH")
    write(tmp_path / "ethanol.xyz", atoms)
    out = tmp_path / "ethanol.pt"
    args = ["export-model", str(path), "--format", "torchscript", "-o", str(out)]
    assert main([*args, "--structure", str(tmp_path / "ethanol.xyz")]) == 0
    module = torch.jit.load(str(out))
    energy, _ = scripted_energy_and_forces(module, atoms.positions)
    atoms.calc = PilipCalculator(path, device="cpu")
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
    capsys.readouterr()
    assert main(args) == 2  # the molecule's atoms are needed
    assert "needs --structure" in capsys.readouterr().err


def test_a_committee_exports_its_mean_to_torchscript_and_mace_refuses_it(tmp_path):
    from pilip.potential.checkpoint import read_checkpoint
    from pilip.potential.committee import committee_payload
    from pilip.potential.export import export_mace

    payloads = []
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        payloads.append(read_checkpoint(checkpoint(tmp_path / str(k))))
    # two members of different weights (checkpoint() seeds 0: perturb member 1)
    state = payloads[1]["model"]["state_dict"]
    name = next(k for k in state if "energy_shift" not in k and state[k].is_floating_point())
    state[name] = state[name] + 0.1
    path = tmp_path / "committee.pt"
    torch.save(committee_payload(payloads, payloads[0]["meta"]), path)
    atoms = molecule("CH3CH2OH")
    export_torchscript(path, atoms.numbers, tmp_path / "model.ts")
    module = torch.jit.load(str(tmp_path / "model.ts"))
    atoms.calc = PilipCalculator(path, device="cpu")
    energy, forces = scripted_energy_and_forces(module, atoms.positions)
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-10)
    assert atoms.calc.results["energy_std"] > 0
    with pytest.raises(PilipError, match="committee of 2 models .* export a member's own"):
        export_mace(path, tmp_path / "x.model")
