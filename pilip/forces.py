"""Forces of any energy model: F = -dE/dR by autograd (one wrapper, not a flag per model)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pilip import keys

EnergyModel = Callable[[dict[str, Tensor]], Tensor]


def energy_and_forces(
    model: EnergyModel, batch: dict[str, Tensor], create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Energies (n_struct,) eV and forces (n_atoms, 3) eV/A of the structures in ``batch``.

    ``create_graph=True`` keeps the graph of the forces so that a loss on them can be
    differentiated with respect to the parameters (training); leave it False for evaluation.
    Works under ``torch.no_grad()`` too (grad mode is enabled locally for the positions).
    """
    positions = batch[keys.POSITIONS]
    with torch.enable_grad():
        if not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        energy = model({**batch, keys.POSITIONS: positions})
        (gradient,) = torch.autograd.grad(
            energy.sum(), positions, create_graph=create_graph, allow_unused=True
        )
    if gradient is None:  # an energy that does not depend on the positions
        gradient = torch.zeros_like(positions)
    forces = -gradient
    if not create_graph:
        energy = energy.detach()
    return energy, forces
