"""Which rows of a dataset table each stage may use: the one place that decides it.

A row's split and its ``force_validation`` flag decide where it may go, so that no number is
measured on data the model was fitted to or selected on:

* ``FIT``: training (weights): split ``train``, not force-validation;
* ``SELECT``: validation (early stopping, model selection): split ``val``, not force-validation;
* ``TEST_ENERGY``: test energies: split ``test`` with an energy of a reference the ``FIT`` rows
  carry (a collected dataset's force-validation rows hold the training reference's energy and
  count; rows whose energy belongs to another reference, e.g. MP2/cc-pVDZ beside MP2/CBS, do
  not);
* ``TEST_FORCES``: test forces: rows with forces that are force-validation rows (any split;
  ``FIT`` and ``SELECT`` never hold them) or rows of the ``test`` split;
* ``MD_START``: starting geometries of the MD stability test: the ``test`` split.

Force-validation rows are never ``FIT`` or ``SELECT`` rows, and no ``test`` row ever is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pilip import keys

FIT, SELECT, TEST_ENERGY, TEST_FORCES, MD_START = (
    "fit", "select", "test_energy", "test_forces", "md_start",
)  # fmt: skip
STAGES = (FIT, SELECT, TEST_ENERGY, TEST_FORCES, MD_START)


@dataclass
class RowFlags:
    """Per-row facts of a dataset table; ``has_energy``, ``has_forces`` and ``reference`` are
    needed by the test stages only (None when not read)."""

    split: np.ndarray  # (n,) object: train | val | test
    force_validation: np.ndarray  # (n,) bool
    has_energy: np.ndarray | None = None  # (n,) bool
    has_forces: np.ndarray | None = None  # (n,) bool
    reference: np.ndarray | None = None  # (n,) object: reference name of the energy


def stage_rows(stage: str, flags: RowFlags) -> np.ndarray:
    """Indices (sorted, int64) of the rows ``stage`` may use (see the module docstring)."""
    split, fv = flags.split, np.asarray(flags.force_validation, dtype=bool)
    if stage == FIT:
        mask = (split == keys.SPLITS[0]) & ~fv
    elif stage == SELECT:
        mask = (split == keys.SPLITS[1]) & ~fv
    elif stage == TEST_ENERGY:
        fitted = stage_rows(FIT, flags)
        has_energy = _needed(flags.has_energy, "has_energy", stage)
        reference = _needed(flags.reference, "reference", stage)
        trained_on = set(reference[fitted].tolist())
        same = np.array([r in trained_on for r in reference.tolist()], dtype=bool)
        mask = (split == keys.SPLITS[2]) & has_energy & (same | ~fv)
    elif stage == TEST_FORCES:
        mask = _needed(flags.has_forces, "has_forces", stage) & (fv | (split == keys.SPLITS[2]))
    elif stage == MD_START:
        mask = split == keys.SPLITS[2]
    else:
        raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    return np.flatnonzero(mask).astype(np.int64)


def _needed(values: np.ndarray | None, name: str, stage: str) -> np.ndarray:
    if values is None:
        raise ValueError(f"stage {stage!r} needs RowFlags.{name}")
    return np.asarray(values)
