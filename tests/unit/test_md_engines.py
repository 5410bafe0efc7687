"""pilip models inside OpenMM through openmm-ml's ASE route: OpenMM's energies and forces are
PilipCalculator's (kJ/mol and nm at OpenMM's side, eV and A at pilip's), and OpenMM runs MD."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from model_batches import small_painn

from pilip.errors import PilipError
from pilip.potential.calculator import PilipCalculator
from pilip.potential.checkpoint import save_checkpoint
from pilip.units import EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM

openmm = pytest.importorskip("openmm")
pytest.importorskip("openmmml")
from openmm import app, unit  # noqa: E402
from openmmml import MLPotential  # noqa: E402

torch.set_num_threads(1)
ELEMENTS = [1, 6, 8]


def topology_of(atoms: Atoms) -> app.Topology:
    """One residue holding ``atoms`` in order, elements from their atomic numbers."""
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for i, z in enumerate(atoms.numbers):
        topology.addAtom(f"{atoms[i].symbol}{i}", app.Element.getByAtomicNumber(int(z)), residue)
    return topology


def openmm_simulation(atoms: Atoms, calculator: PilipCalculator, seed: int = 1):
    system = MLPotential("ase").createSystem(topology_of(atoms), calculator=calculator)
    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    # Reference: double precision throughout, so the comparison below can be tight
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, integrator, platform)
    context.setPositions(atoms.positions * unit.angstrom)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    return context, integrator


def openmm_state(context) -> tuple[float, np.ndarray, np.ndarray]:
    """(energy eV, forces eV/A, positions A) of the context's current state."""
    state = context.getState(getEnergy=True, getForces=True, getPositions=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    return energy / EV_TO_KJ_PER_MOL, forces / (EV_TO_KJ_PER_MOL * NM_TO_ANGSTROM), positions


def run_and_compare(atoms: Atoms, path, steps: int = 20) -> None:
    context, integrator = openmm_simulation(atoms, PilipCalculator(path, device="cpu"))
    numbers = atoms.numbers
    compare(context, path, numbers)  # the starting geometry
    integrator.step(steps)
    energy, _, positions = openmm_state(context)
    assert np.isfinite(energy) and np.isfinite(positions).all()
    assert np.abs(positions - atoms.positions).max() > 1e-4  # the atoms moved
    compare(context, path, numbers)  # a geometry OpenMM's dynamics produced


def compare(context, path, numbers) -> None:
    energy, forces, positions = openmm_state(context)
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = PilipCalculator(path, device="cpu")
    # Totals are ~4e3 eV (per-element offsets); in float64 they agree to ~1e-12 eV. 1e-6 eV
    # is far below any unit slip: CODATA 2018's kJ/mol instead of ASE's (2014) moves them by
    # 3e-5 eV, kcal for kJ by a factor of 4.2, nm for A by orders of magnitude.
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    assert abs(energy) > 1e3
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-8)
    assert np.abs(forces).max() > 1e-2  # a flat model would make the test empty


def test_openmm_steps_with_a_pilip_model_match_the_calculator(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, model=small_painn(), model_name="painn", meta={"elements": ELEMENTS})
    run_and_compare(molecule("CH3CH2OH"), path)


def test_a_float32_model_gives_the_calculator_numbers_too(tmp_path):
    path = tmp_path / "model.pt"
    model = small_painn("float32")
    save_checkpoint(path, model=model, model_name="painn", meta={"elements": ELEMENTS})
    run_and_compare(molecule("H2O"), path, steps=5)


def test_a_delta_model_over_xtb_runs_in_openmm(tmp_path):
    pytest.importorskip("tblite")
    from pilip.potential.baselines import resolve_baseline

    path = tmp_path / "model.pt"
    spec = resolve_baseline("gfn2-xtb").specification()
    meta = {"config": {}, "elements": ELEMENTS, "recipes": [{"name": "delta", "baseline": spec}]}
    save_checkpoint(path, model=small_painn(), model_name="painn", meta=meta)
    assert hasattr(PilipCalculator(path, device="cpu").model, "baseline")  # xtb + network
    run_and_compare(molecule("H2O"), path, steps=3)


def test_a_delta_model_over_a_tabled_baseline_is_refused_before_openmm(tmp_path):
    pytest.importorskip("tblite")
    from pilip.potential.baselines import resolve_baseline

    path = tmp_path / "model.pt"
    spec = resolve_baseline("gfn2-xtb").specification()
    record = {"name": "delta", "baseline": spec, "tabled": True}
    meta = {"config": {}, "elements": ELEMENTS, "recipes": [record]}
    save_checkpoint(path, model=small_painn(), model_name="painn", meta=meta)
    with pytest.raises(PilipError, match="distill"):
        PilipCalculator(path, device="cpu")
