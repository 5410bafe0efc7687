"""The physics every registered energy model must obey, run on each model in float64.

Forces are the exact negative gradient; the energy is invariant under rotation, translation
and permutation of like atoms; a structure's energy does not depend on its batch-mates; the
double backward (parameter gradients of a force-dependent loss) is exact; and the energy is
twice continuously differentiable as an atom crosses the cutoff.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from ase import Atoms
from model_batches import molecules, random_rotation, to_batch

from pilip import keys
from pilip.errors import PilipError
from pilip.potential.forces import energy_and_forces
from pilip.potential.losses import LossTerm, WeakLossOptions, compute_losses
from pilip.potential.models import MODELS, build_model
from pilip.potential.neighbors import molecular_pairs, neighbor_list

CUTOFF = 3.0  # A: shorter than ethanol, so that edges are pruned and cross the cutoff
# the registry's models that can be built here (MACE needs the mace extra)
INSTALLED = [name for name in MODELS if name != "mace" or importlib.util.find_spec("mace")]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def small_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(
        name, cutoff=CUTOFF, n_features=16, n_rbf=8, n_interactions=2, dtype="float64"
    )
    # random biases and shifts: a freshly built model may hide errors behind zero terms
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.energy_shift.shift[:10] = torch.linspace(-1.0, 1.0, 10, dtype=torch.float64)
        model.energy_shift.scale.fill_(1.3)
    return model


def five_point_derivative(f, h: float) -> float:
    """df/dx at 0 by the five-point central stencil (error O(h^4)), f: float -> float."""
    return (8 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12 * h)


def _energy_along(model, batch, atom: int, xyz: int, structure: int | None = None):
    """x -> energy (eV) with one coordinate moved by x A: of one structure, or summed."""

    def energy(x: float) -> float:
        shifted = batch[keys.POSITIONS].clone()
        shifted[atom, xyz] += x
        e = model({**batch, keys.POSITIONS: shifted}).detach()
        return float(e.sum() if structure is None else e[structure])

    return energy


@pytest.fixture(params=sorted(MODELS))
def model(request) -> torch.nn.Module:
    return small_model(request.param)


def test_registry_builds_every_model_with_its_dtype():
    for name in INSTALLED:
        assert next(build_model(name).parameters()).dtype == torch.float32
        m = build_model(name, dtype="float64", cutoff=4.0)
        assert next(m.parameters()).dtype == torch.float64
        assert m.hparams()["cutoff"] == 4.0 and m.cutoff == 4.0


def test_registry_rejects_unknown_models_and_hyper_parameters():
    with pytest.raises(PilipError, match="unknown model 'allegro'.*mace, painn, schnet"):
        build_model("allegro")
    with pytest.raises(PilipError, match="n_feature.*valid ones are"):
        build_model("painn", n_feature=8)
    with pytest.raises(PilipError, match="float16"):
        build_model("schnet", dtype="float16")


def test_forces_equal_finite_differences(model):
    batch = to_batch(molecules())
    _, forces = energy_and_forces(model, batch)
    rng = np.random.default_rng(1)
    for atom in rng.choice(batch[keys.POSITIONS].shape[0], size=6, replace=False):
        for xyz in range(3):
            numerical = -five_point_derivative(_energy_along(model, batch, atom, xyz), 1e-5)
            assert float(forces[atom, xyz]) == pytest.approx(numerical, rel=1e-7, abs=1e-8)


def test_energy_invariant_and_forces_equivariant_under_rotation_and_translation(model):
    batch = to_batch(molecules())
    energy, forces = energy_and_forces(model, batch)
    rotation = random_rotation(3)
    moved = batch[keys.POSITIONS] @ rotation.T + torch.tensor([1.5, -7.0, 3.25])
    energy_moved, forces_moved = energy_and_forces(model, {**batch, keys.POSITIONS: moved})
    torch.testing.assert_close(energy_moved, energy, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(forces_moved, forces @ rotation.T, rtol=1e-10, atol=1e-10)


def test_energy_invariant_under_permutation_of_like_atoms(model):
    ethanol = molecules(("CH3CH2OH",))[0]
    order = np.arange(len(ethanol))
    hydrogens = np.flatnonzero(ethanol.numbers == 1)
    carbons = np.flatnonzero(ethanol.numbers == 6)
    order[hydrogens] = np.roll(hydrogens, 2)
    order[carbons] = carbons[::-1]
    permuted = ethanol[order]
    assert not np.allclose(permuted.positions, ethanol.positions)
    e0, f0 = energy_and_forces(model, to_batch([ethanol]))
    e1, f1 = energy_and_forces(model, to_batch([permuted]))
    torch.testing.assert_close(e1, e0, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(f1, f0[torch.from_numpy(order)], rtol=1e-10, atol=1e-10)


def test_energy_of_a_structure_does_not_depend_on_its_batch(model):
    # an isolated atom (no edges at all) included
    structures = [*molecules(("CH3CH2OH", "H2O", "CH4", "C6H6")), Atoms("O", positions=[[0, 0, 0]])]
    together, forces_together = energy_and_forces(model, to_batch(structures))
    alone = [energy_and_forces(model, to_batch([s])) for s in structures]
    torch.testing.assert_close(together, torch.cat([e for e, _ in alone]), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(
        forces_together, torch.cat([f for _, f in alone]), rtol=1e-10, atol=1e-10
    )
    # the same structure twice in a batch gets the same energy twice
    twice, _ = energy_and_forces(model, to_batch([structures[0], structures[0]]))
    torch.testing.assert_close(twice[0], twice[1], rtol=1e-13, atol=1e-12)


def _force_dependent_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    # forces MSE + PITC + PISC with the second-order factor, so F(R), F(B) and F(C) all enter;
    # a fixed seed gives the same perturbations for every evaluation
    terms = [LossTerm("forces", 1.0), LossTerm("pitc", 1.0), LossTerm("pisc", 1.0)]
    generator = torch.Generator().manual_seed(7)
    return compute_losses(model, batch, terms, generator, WeakLossOptions(eps=0.1, k=0.5))["total"]


def test_parameter_gradient_of_force_loss_equals_finite_differences(model):
    batch = to_batch(molecules(("CH3CH2OH", "H2O")))
    reference_model = small_model(model.__class__.__name__.lower(), seed=5)
    _, reference_forces = energy_and_forces(reference_model, batch)
    batch[keys.FORCES] = reference_forces
    loss = _force_dependent_loss(model, batch)
    params = dict(model.named_parameters())
    gradients = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    rng = np.random.default_rng(2)
    h = 1e-6
    checked = 0
    for name in rng.choice(sorted(params), size=8, replace=False):
        p = params[name]
        flat_index = int(rng.integers(p.numel()))
        with torch.no_grad():
            original = p.view(-1)[flat_index].item()
            p.view(-1)[flat_index] = original + h
            up = _force_dependent_loss(model, batch)
            p.view(-1)[flat_index] = original - h
            down = _force_dependent_loss(model, batch)
            p.view(-1)[flat_index] = original
        numerical = float(up - down) / (2 * h)
        analytic = float(gradients[name].view(-1)[flat_index])
        assert analytic == pytest.approx(numerical, rel=1e-5, abs=1e-9), name
        checked += abs(numerical) > 1e-6
    assert checked >= 4  # the check is not vacuous


def _energy_derivatives(model: torch.nn.Module, r: float) -> tuple[float, float, float]:
    """E, dE/dr, d2E/dr2 of a 3-atom structure whose third atom sits r from the second."""
    distance = torch.tensor(r, dtype=torch.float64, requires_grad=True)
    positions = torch.stack(
        [
            torch.zeros(3, dtype=torch.float64),
            torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
            torch.stack(
                [
                    1.0 + distance,
                    torch.tensor(0.2, dtype=torch.float64),
                    torch.zeros((), dtype=torch.float64),
                ]
            ),
        ]
    )
    batch = to_batch([Atoms("COH", positions=np.zeros((3, 3)))])
    energy = model({**batch, keys.POSITIONS: positions}).sum()
    (first,) = torch.autograd.grad(energy, distance, create_graph=True)
    (second,) = torch.autograd.grad(first, distance)
    return float(energy.detach()), float(first.detach()), float(second)


def test_energy_is_twice_differentiable_as_an_atom_crosses_the_cutoff(model):
    # the third atom only sees the second within the cutoff (the first is > cutoff away)
    far = _energy_derivatives(model, CUTOFF + 0.5)
    just_outside = _energy_derivatives(model, CUTOFF + 1e-3)
    assert just_outside[0] == pytest.approx(far[0], abs=1e-14)
    assert just_outside[1:] == (0.0, 0.0)
    inside = {delta: _energy_derivatives(model, CUTOFF - delta) for delta in (1e-1, 1e-2, 1e-3)}
    interaction = {d: inside[d][0] - far[0] for d in inside}
    # value ~ delta^3, slope ~ delta^2, curvature ~ delta: no jump in E, F or dF/dr
    assert abs(inside[1e-1][2]) > 1e-6  # the atom does interact
    for coarse, fine in ((1e-1, 1e-2), (1e-2, 1e-3)):
        assert abs(interaction[fine]) < abs(interaction[coarse]) / 300
        assert abs(inside[fine][1]) < abs(inside[coarse][1]) / 30
        assert abs(inside[fine][2]) < abs(inside[coarse][2]) / 3


def _periodic_structure() -> Atoms:
    rng = np.random.default_rng(4)
    cell = np.array([[4.0, 0.0, 0.0], [0.6, 3.8, 0.0], [0.3, -0.4, 4.2]])
    # a skewed cell smaller than twice the cutoff: atoms see their own periodic images
    scaled = rng.uniform(size=(5, 3))
    atoms = Atoms("CCHHO", scaled_positions=scaled, cell=cell, pbc=True)
    return atoms


def test_periodic_forces_and_translation_invariance(model):
    atoms = _periodic_structure()
    batch = to_batch([atoms, molecules(("H2O",))[0]])
    energy, forces = energy_and_forces(model, batch)
    for atom, xyz in ((0, 0), (2, 1), (4, 2)):
        numerical = -five_point_derivative(_energy_along(model, batch, atom, xyz, 0), 1e-5)
        assert float(forces[atom, xyz]) == pytest.approx(numerical, rel=1e-7, abs=1e-8)
    # translating a periodic structure, even across the cell boundary, changes nothing
    moved = batch[keys.POSITIONS].clone()
    moved[:5] += torch.tensor([3.1, -2.0, 5.7], dtype=torch.float64)
    torch.testing.assert_close(
        model({**batch, keys.POSITIONS: moved}), energy, rtol=1e-12, atol=1e-10
    )
    # wrapping an atom back into the cell by a lattice vector changes nothing either
    wrapped = batch[keys.POSITIONS].clone()
    wrapped[1] += batch[keys.CELL][0, 2]
    torch.testing.assert_close(
        model({**batch, keys.POSITIONS: wrapped}), energy, rtol=1e-12, atol=1e-10
    )


def test_energy_shift_fit_recovers_per_element_energies():
    shift = {1: -13.6, 6: -1029.5, 8: -2041.3}
    structures = molecules(("CH3CH2OH", "H2O", "CH4", "CH3COCH3", "CO2"))
    batch = to_batch(structures)
    counts_energy = torch.tensor(
        [sum(shift[int(z)] for z in s.numbers) for s in structures], dtype=torch.float64
    )
    for name in INSTALLED:
        model = build_model(name, dtype="float64")
        model.energy_shift.fit(batch[keys.NUMBERS], batch[keys.BATCH], counts_energy)
        for z, value in shift.items():
            assert float(model.energy_shift.shift[z]) == pytest.approx(value, abs=1e-8)
        assert float(model.energy_shift.shift[7]) == 0.0
        # exact compositional energies leave no residual: the scale falls back to 1
        assert float(model.energy_shift.scale) == 1.0
    # with noise, the scale is the residual standard deviation per sqrt(atom)
    noise = torch.tensor([0.3, -0.2, 0.1, -0.4, 0.25], dtype=torch.float64)
    model = build_model("schnet", dtype="float64")
    model.energy_shift.fit(batch[keys.NUMBERS], batch[keys.BATCH], counts_energy + noise)
    assert 0.0 < float(model.energy_shift.scale) < 0.3


def test_precomputed_candidate_pairs_change_nothing(model):
    # unpruned pairs beyond the cutoff get exactly zero weight: same energies, forces and
    # parameter gradients of a force-dependent loss, without host syncs in forward
    batch = to_batch(molecules(("CH3CH2OH", "H2O", "C6H6")))
    static = {**batch, keys.EDGE_INDEX: molecular_pairs(batch[keys.N_ATOMS])}
    e0, f0 = energy_and_forces(model, batch)
    e1, f1 = energy_and_forces(model, static)
    torch.testing.assert_close(e1, e0, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(f1, f0, rtol=1e-12, atol=1e-12)
    _, edges_pruned = neighbor_list(batch, CUTOFF)
    assert edges_pruned.shape[0] < static[keys.EDGE_INDEX].shape[1]  # some pairs are beyond
    batch[keys.FORCES] = static[keys.FORCES] = f0 + 0.1
    params = list(model.parameters())
    g0 = torch.autograd.grad(_force_dependent_loss(model, batch), params)
    g1 = torch.autograd.grad(_force_dependent_loss(model, static), params)
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
