"""Building blocks shared by the models: radial bases, the cutoff envelope, energy shifts.

Second derivatives of the energy enter training (forces by autograd, then the parameter
gradient of a force-dependent loss), so everything that touches a distance is at least twice
continuously differentiable, including at the cutoff.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from pilip import keys
from pilip.potential.neighbors import segment_sum

N_ELEMENTS = 119  # atomic numbers 0..118


def polynomial_envelope(r: Tensor, cutoff: float, p: int = 5) -> Tensor:
    """Smooth cutoff u(r) in [0, 1]: 1 at r = 0, 0 for r >= cutoff (DimeNet's envelope).

    u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), x = r / cutoff.
    Value, first and second derivative vanish at x = 1, so the energy is C2 as an atom crosses
    the cutoff. ``r`` in Angstrom, any shape; needs p >= 3.
    """
    x = r / cutoff
    u = (
        1.0
        - 0.5 * (p + 1) * (p + 2) * x**p
        + p * (p + 2) * x ** (p + 1)
        - 0.5 * p * (p + 1) * x ** (p + 2)
    )
    # the polynomial is finite beyond the cutoff, so torch.where has finite gradients on both sides
    return torch.where(x < 1.0, u, torch.zeros_like(u))


class GaussianRBF(nn.Module):
    """exp(-gamma (r - mu_k)^2) on ``n_rbf`` centres evenly spaced in [0, cutoff] (SchNet)."""

    def __init__(self, n_rbf: int, cutoff: float) -> None:
        super().__init__()
        centres = torch.linspace(0.0, cutoff, n_rbf, dtype=torch.float64)
        spacing = cutoff / (n_rbf - 1)
        self.register_buffer("centres", centres.float())
        self.gamma = 0.5 / spacing**2

    def forward(self, r: Tensor) -> Tensor:
        """r (n_edges,) A -> (n_edges, n_rbf)."""
        return torch.exp(-self.gamma * (r[:, None] - self.centres) ** 2)


class SineRBF(nn.Module):
    """sin(n pi r / cutoff) / r for n = 1..n_rbf (PaiNN); smooth at r -> 0 in the limit."""

    def __init__(self, n_rbf: int, cutoff: float) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.arange(1, n_rbf + 1).float() * math.pi / cutoff)

    def forward(self, r: Tensor) -> Tensor:
        """r (n_edges,) A, r > 0 -> (n_edges, n_rbf)."""
        return torch.sin(self.frequencies * r[:, None]) / r[:, None]


def shifted_softplus(x: Tensor) -> Tensor:
    """softplus(x) - log 2: zero at zero, smooth (SchNet's activation)."""
    return nn.functional.softplus(x) - math.log(2.0)


class EnergyShift(nn.Module):
    """E = scale * sum_i e_i + sum_i shift[Z_i]: per-element offsets fitted by least squares.

    ``shift`` (119,) eV and ``scale`` () eV are buffers in the model's dtype (saved in the
    state dict, not trained). Whatever that dtype, the shifts of a structure are summed in
    float64 (``reference``), so the model's energy is exactly network + that sum.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(N_ELEMENTS))
        self.register_buffer("scale", torch.ones(()))

    def network(self, atomic: Tensor, batch: Tensor, n_struct: int) -> Tensor:
        """atomic (n_atoms,) network outputs -> (n_struct,) scaled sums, in their dtype, eV."""
        return segment_sum(self.scale.to(atomic.dtype) * atomic, batch, n_struct)

    def reference(self, numbers: Tensor, batch: Tensor, n_struct: int) -> Tensor:
        """(n_struct,) float64 sums of the per-element shifts of each structure's atoms, eV."""
        return segment_sum(self.shift.double().index_select(0, numbers), batch, n_struct)

    @torch.no_grad()
    def fit(self, numbers: Tensor, batch: Tensor, energies: Tensor) -> None:
        """Least-squares per-element shifts from training energies, then the residual scale.

        ``numbers`` (n_atoms,), ``batch`` (n_atoms,) structure index, ``energies`` (n_struct,)
        eV of ALL training structures. Elements absent from the data get shift 0. With a single
        composition (e.g. one molecule's MD), the minimum-norm solution is used. ``scale`` is
        the residual standard deviation per sqrt(atom): the size of an atomic contribution if
        they were independent, so that the network's outputs start at order one.
        """
        s = shifts_from_energies(
            numbers.cpu().numpy(), batch.cpu().numpy(), energies.detach().cpu().numpy()
        )
        self.shift.copy_(torch.from_numpy(s[0]))
        self.scale.fill_(s[1])


class ShiftedEnergyModel(nn.Module):
    """Base of pilip's models: E(R) = network_energy(R) + reference_energy(Z), in eV.

    The reference energy (the sum of per-element shifts, thousands of eV) does not depend on
    the positions and cancels exactly from every difference of energies of the same atoms.
    Kept apart and summed in float64, it leaves float32 models the precision that the weak
    losses need: their residuals are differences of ~1e-3 eV between energies of ~1e4 eV,
    below float32's resolution of such totals (~1e-3 eV). Subclasses set ``energy_shift``
    and implement ``network_energy``.
    """

    energy_shift: EnergyShift

    def network_energy(self, batch: dict[str, Tensor]) -> Tensor:
        """(n_struct,) energies without the reference, in the model's dtype, eV."""
        raise NotImplementedError

    def reference_energy(self, batch: dict[str, Tensor]) -> Tensor:
        """(n_struct,) float64 sums of the per-element shifts, eV (no position dependence)."""
        n_struct = batch[keys.N_ATOMS].shape[0]
        return self.energy_shift.reference(batch[keys.NUMBERS], batch[keys.BATCH], n_struct)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Total energies (n_struct,) eV in the model's dtype (positions in Angstrom)."""
        energy = self.network_energy(batch)
        return energy + self.reference_energy(batch).to(energy.dtype)


def shifts_from_energies(
    numbers: np.ndarray, batch: np.ndarray, energies: np.ndarray
) -> tuple[np.ndarray, float]:
    """(shift (119,) eV, scale eV) by least squares on compositions; see ``EnergyShift.fit``."""
    numbers = np.asarray(numbers, dtype=np.int64)
    batch = np.asarray(batch, dtype=np.int64)
    energies = np.asarray(energies, dtype=np.float64)
    n_struct = energies.shape[0]
    counts = np.zeros((n_struct, N_ELEMENTS))
    np.add.at(counts, (batch, numbers), 1.0)
    present = counts.any(axis=0)
    solution, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    shift = np.zeros(N_ELEMENTS)
    shift[present] = solution
    residual = energies - counts @ shift
    n_atoms = counts.sum(axis=1)
    scale = float(np.sqrt(np.mean(residual**2) / np.mean(n_atoms))) if n_struct > 1 else 1.0
    if not np.isfinite(scale) or scale < 1e-6:
        scale = 1.0
    return shift, scale
