"""Forces of any energy model: F = -dE/dR by autograd (one wrapper, not a flag per model).

An energy model is any callable from a batch dict to per-structure energies (n_struct,) eV.
pilip's own models (``ShiftedEnergyModel``) add a position-independent reference energy of
thousands of eV; ``energy_parts`` separates it, so that evaluation sums it in float64 and the
losses can leave it out of differences in which it cancels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pilip import keys
from pilip.potential.models.common import ShiftedEnergyModel

EnergyModel = Callable[[dict[str, Tensor]], Tensor]
ReferenceEnergy = Callable[[dict[str, Tensor]], Tensor]


def energy_parts(model: EnergyModel) -> tuple[EnergyModel, ReferenceEnergy | None]:
    """(position-dependent part, its float64 reference part or None) of ``model``.

    For a ``ShiftedEnergyModel``: its ``network_energy`` (model dtype) and ``reference_energy``
    (float64, no position dependence); any other callable is its own first part.
    """
    if isinstance(model, ShiftedEnergyModel):
        return model.network_energy, model.reference_energy
    return model, None


@torch.no_grad()
def total_energy(model: EnergyModel, batch: dict[str, Tensor]) -> Tensor:
    """Energies (n_struct,) eV in float64, the reference summed in float64 (evaluation)."""
    network, reference = energy_parts(model)
    energy = network(batch).double()
    return energy if reference is None else energy + reference(batch)


def energy_and_forces(
    model: EnergyModel, batch: dict[str, Tensor], create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Energies (n_struct,) eV and forces (n_atoms, 3) eV/A of the structures in ``batch``.

    ``create_graph=True`` keeps the graph of the forces so that a loss on them can be
    differentiated with respect to the parameters (training); the energies are then in the
    model's dtype. Left False (evaluation), energies come back detached in float64 with the
    reference energy summed in float64. Works under ``torch.no_grad()`` too (grad mode is
    enabled locally for the positions).
    """
    network, reference = energy_parts(model)
    positions = batch[keys.POSITIONS]
    with torch.enable_grad():
        if not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        inputs = {**batch, keys.POSITIONS: positions}
        energy = network(inputs)
        (gradient,) = torch.autograd.grad(
            energy.sum(), positions, create_graph=create_graph, allow_unused=True
        )
    if gradient is None:  # an energy that does not depend on the positions
        gradient = torch.zeros_like(positions)
    forces = -gradient
    if not create_graph:
        energy = energy.detach().double()
    if reference is not None:
        energy = energy + reference(inputs).to(energy.dtype)
    return energy, forces
