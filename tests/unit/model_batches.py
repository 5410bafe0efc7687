"""Small batches for the model and loss tests: ASE molecules, rattled, as a batch dict."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

from pilip import keys


def molecules(names: tuple[str, ...] = ("CH3CH2OH", "H2O", "CH4"), seed: int = 0) -> list[Atoms]:
    """ASE G2 molecules, each rattled by 0.05 A so that no symmetry hides an error."""
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        atoms = molecule(name)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        out.append(atoms)
    return out


def to_batch(
    structures: list[Atoms], dtype: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    """Concatenate structures into a model batch (cell and pbc only when one is periodic)."""
    n_atoms = torch.tensor([len(a) for a in structures])
    batch = {
        keys.NUMBERS: torch.from_numpy(np.concatenate([a.numbers for a in structures])).long(),
        keys.POSITIONS: torch.from_numpy(np.concatenate([a.positions for a in structures])).to(
            dtype
        ),
        keys.BATCH: torch.repeat_interleave(torch.arange(len(structures)), n_atoms),
        keys.N_ATOMS: n_atoms,
    }
    if any(a.pbc.any() for a in structures):
        batch[keys.CELL] = torch.from_numpy(np.stack([a.cell.array for a in structures])).to(dtype)
        batch[keys.PBC] = torch.from_numpy(np.stack([a.pbc for a in structures]))
    return batch


def random_rotation(seed: int) -> torch.Tensor:
    """A proper rotation matrix (3, 3), float64."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return torch.from_numpy(q)


def small_painn(dtype: str = "float64"):
    """A small PaiNN (seed 0) with realistic per-element offsets (eV): totals of thousands of
    eV, as in a trained model."""
    from pilip.potential.models import build_model

    torch.manual_seed(0)
    model = build_model("painn", n_features=16, n_rbf=8, n_interactions=2, dtype=dtype)
    model.energy_shift.shift[1] = -13.6
    model.energy_shift.shift[6] = -1029.0
    model.energy_shift.shift[8] = -2040.0
    return model.eval()
