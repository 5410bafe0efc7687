"""Error metrics of predicted energies and forces against reference labels.

Energies are per structure in eV; forces are per atom in eV/A. Force errors are taken over
every Cartesian component (the usual convention of MLIP papers), so ``force_rmse`` is
``sqrt(mean((F_pred - F_ref)_ic^2))`` over atoms i and components c. The returned dicts use
the stable key names of ``metrics.json`` (see ``pilip.potential.evaluate``).
"""

from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols

from pilip.units import EV_TO_MEV


def rmse(error: np.ndarray) -> float:
    """Root-mean-square of all entries of ``error`` (same unit as ``error``)."""
    error = np.asarray(error, dtype=np.float64)
    return float(np.sqrt(np.mean(error**2)))


def mae(error: np.ndarray) -> float:
    """Mean absolute value of all entries of ``error`` (same unit as ``error``)."""
    return float(np.mean(np.abs(np.asarray(error, dtype=np.float64))))


def energy_metrics(
    predicted: np.ndarray, reference: np.ndarray, n_atoms: np.ndarray
) -> dict[str, float | int | None]:
    """Energy errors of ``n`` structures.

    Args:
        predicted: (n,) eV, model energies.
        reference: (n,) eV, reference energies.
        n_atoms: (n,) atoms per structure, for the per-atom errors.

    Returns:
        ``energy_rmse``, ``energy_mae`` (eV), ``energy_rmse_mev_per_atom``,
        ``energy_mae_mev_per_atom`` (meV/atom: each structure's error divided by its atom
        count) and ``n_energy``. Errors are None when ``n == 0``.
    """
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    n_atoms = np.asarray(n_atoms, dtype=np.float64).reshape(-1)
    if not predicted.shape == reference.shape == n_atoms.shape:
        raise ValueError(
            f"shapes differ: predicted {predicted.shape}, reference {reference.shape}, "
            f"n_atoms {n_atoms.shape}"
        )
    if predicted.size == 0:
        return {
            "energy_rmse": None,
            "energy_mae": None,
            "energy_rmse_mev_per_atom": None,
            "energy_mae_mev_per_atom": None,
            "n_energy": 0,
        }
    error = predicted - reference
    per_atom_mev = error / n_atoms * EV_TO_MEV
    return {
        "energy_rmse": rmse(error),
        "energy_mae": mae(error),
        "energy_rmse_mev_per_atom": rmse(per_atom_mev),
        "energy_mae_mev_per_atom": mae(per_atom_mev),
        "n_energy": int(predicted.size),
    }


def force_metrics(
    predicted: np.ndarray, reference: np.ndarray, numbers: np.ndarray, n_structures: int
) -> dict[str, object]:
    """Force errors over all atoms of ``n_structures`` structures, overall and per element.

    Args:
        predicted: (n_atoms_total, 3) eV/A, model forces.
        reference: (n_atoms_total, 3) eV/A, reference forces.
        numbers: (n_atoms_total,) atomic numbers.
        n_structures: how many structures the atoms come from (reported only).

    Returns:
        ``force_rmse``, ``force_mae`` (eV/A, over components), ``force_rmse_per_element`` and
        ``force_mae_per_element`` (element symbol -> eV/A, over that element's components),
        ``n_force_structures``, ``n_force_components``. Errors are None (per-element dicts
        empty) when there are no atoms.
    """
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1, 3)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(numbers).reshape(-1)
    if not predicted.shape == reference.shape or predicted.shape[0] != numbers.shape[0]:
        raise ValueError(
            f"shapes differ: predicted {predicted.shape}, reference {reference.shape}, "
            f"numbers {numbers.shape}"
        )
    error = predicted - reference
    result: dict[str, object] = {
        "force_rmse": rmse(error) if error.size else None,
        "force_mae": mae(error) if error.size else None,
        "force_rmse_per_element": {},
        "force_mae_per_element": {},
        "n_force_structures": int(n_structures) if error.size else 0,
        "n_force_components": int(error.size),
    }
    for z in np.unique(numbers):
        symbol = chemical_symbols[int(z)]
        result["force_rmse_per_element"][symbol] = rmse(error[numbers == z])
        result["force_mae_per_element"][symbol] = mae(error[numbers == z])
    return result
