"""ASE calculator wrapping a trained pilip model: atoms -> batch -> model -> eV, eV/A.

from pilip.potential.calculator import PilipCalculator
atoms.calc = PilipCalculator("models/weak/model.pt", device="auto")
atoms.get_potential_energy()  # eV
atoms.get_forces()            # eV/A, -dE/dR by autograd

A Delta model (``pilip train --baseline gfn2-xtb``) returns baseline + model with no extra
argument; its baseline reads the charge and multiplicity from ``atoms.info["charge"]`` and
``atoms.info["multiplicity"]`` (default: those of its training data).

A committee (``pilip train --ensemble N``) gives the members' mean as ``energy`` and
``forces``, and their spread as ``energy_std`` (eV, float) and ``forces_std`` ((n_atoms, 3)
eV/A, float64), the population standard deviations over the members
(``calc.get_property("forces_std", atoms)``); a single model has neither key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols
from torch import nn

from pilip import keys
from pilip.errors import PilipError
from pilip.potential.committee import committee_of, predict_with_spread
from pilip.potential.devices import resolve_device


def atoms_to_batch(atoms: Atoms, device: torch.device, dtype: torch.dtype) -> dict:
    """The one-structure model batch of ``atoms`` (positions in A; cell only if periodic)."""
    n = len(atoms)
    batch = {
        keys.NUMBERS: torch.as_tensor(atoms.numbers, dtype=torch.long, device=device),
        keys.POSITIONS: torch.as_tensor(atoms.positions, dtype=dtype, device=device),
        keys.BATCH: torch.zeros(n, dtype=torch.long, device=device),
        keys.N_ATOMS: torch.tensor([n], dtype=torch.long, device=device),
    }
    if atoms.pbc.any():
        batch[keys.CELL] = torch.as_tensor(atoms.cell.array[None], dtype=dtype, device=device)
        batch[keys.PBC] = torch.as_tensor(atoms.pbc[None], device=device)
    return batch


class PilipCalculator(Calculator):
    """Energy (eV) and forces (eV/A) of a pilip model, on CPU or CUDA.

    Args:
        model: a checkpoint path (``models/<run>/model.pt``) or an energy model
            (``nn.Module`` from a batch dict to energies in eV).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        elements: atomic numbers the model was trained on; read from the checkpoint when
            ``model`` is a path. Atoms of other elements are refused with a PilipError.
    """

    implemented_properties = [keys.ENERGY, keys.FORCES]
    committee_properties = [keys.ENERGY_STD, keys.FORCES_STD]  # a committee's spread

    def __init__(
        self,
        model: str | Path | nn.Module,
        device: str | torch.device = "auto",
        elements: list[int] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.device = resolve_device(device)
        if isinstance(model, (str, Path)):
            from pilip.potential.checkpoint import load_model

            model, meta = load_model(model, self.device)
            elements = meta.get("elements", elements)
        self.model = model.to(self.device).eval()
        # a Delta model's baseline runs at the training data's charge and multiplicity unless
        # atoms.info says otherwise
        self.trained_electrons = (getattr(model, "charge", 0), getattr(model, "multiplicity", 1))
        self.dtype = next(self.model.parameters()).dtype
        self.elements = None if elements is None else {int(z) for z in elements}
        if committee_of(self.model) is not None:
            self.implemented_properties = [*self.implemented_properties,
                                           *self.committee_properties]  # fmt: skip

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        if self.elements is not None:
            unknown = sorted(set(self.atoms.numbers.tolist()) - self.elements)
            if unknown:
                names = ", ".join(chemical_symbols[z] for z in unknown)
                raise PilipError(f"the model was not trained on element(s) {names}")
        if hasattr(self.model, "baseline"):  # a Delta model: the baseline needs the electrons
            self.model.charge = int(self.atoms.info.get("charge", self.trained_electrons[0]))
            self.model.multiplicity = int(
                self.atoms.info.get("multiplicity", self.trained_electrons[1])
            )
        batch = atoms_to_batch(self.atoms, self.device, self.dtype)
        prediction = predict_with_spread(self.model, batch)
        self.results = {
            keys.ENERGY: float(prediction.energy[0]),
            keys.FORCES: prediction.forces.cpu().numpy().astype(np.float64),
        }
        if prediction.energy_std is not None:
            self.results[keys.ENERGY_STD] = float(prediction.energy_std[0])
            self.results[keys.FORCES_STD] = prediction.forces_std.cpu().numpy().astype(np.float64)
