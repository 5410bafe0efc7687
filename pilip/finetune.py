"""Fine-tuning: start training from a pilip checkpoint (``pilip train DATASET --init MODEL.pt``).

The typical use: pretrain on cheap energies and forces of many configurations (GFN2-xTB, DFT
gradients), then fine-tune on the few reference energies. The checkpoint gives the
architecture and the weights; the per-element reference energies are refitted by least squares
on the new labels (the cheap level's total energies differ from the reference's by thousands of
eV), keeping the network; the optimizer starts afresh.

Refit: with E_new the new training energies and N(R) the checkpoint's network energy (eV),
the shifts solve min sum_s (E_new,s - N(R_s) - sum_Z c_sZ shift_Z)^2 over the compositions
c_sZ, so the model starts as close to the new labels as its network allows. Labels that are
the checkpoint's own predictions give back its own shifts, so such a fine-tune starts exactly
where the checkpoint ended.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols
from torch import nn

from pilip.checkpoint import model_from_checkpoint, read_checkpoint
from pilip.errors import PilipError
from pilip.models.common import shifts_from_energies


def init_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict of ``--init`` (one-line PilipError if it is not one)."""
    return read_checkpoint(path, "cpu")


def check_compatible(
    payload: dict[str, Any],
    path: str | Path,
    *,
    model: str | None,
    model_params: dict[str, Any],
    elements: list[int],
) -> None:
    """One-line PilipError if the ``--init`` checkpoint cannot start this run.

    ``model`` / ``model_params``: the architecture flags the user gave (None / absent: take the
    checkpoint's); ``elements``: atomic numbers of the new data (training, validation and
    unlabelled structures), each of which the checkpoint must have been trained on.
    """
    name = payload["model"]["name"]
    hparams = payload["model"]["hparams"]
    if model is not None and model != name:
        raise PilipError(
            f"--init {path} is a {name} model but --model {model} was asked; drop --model "
            "(fine-tuning keeps the checkpoint's architecture)"
        )
    different = sorted(
        key for key, value in model_params.items() if key in hparams and hparams[key] != value
    )
    unknown = sorted(key for key in model_params if key not in hparams)
    if different or unknown:
        detail = ", ".join(
            f"{k} {model_params[k]} (checkpoint: {hparams.get(k)})" for k in different
        )
        detail += ", ".join(f"{k} (not a {name} setting)" for k in unknown)
        raise PilipError(
            f"--init {path} has another architecture than asked: {detail}; drop those flags "
            "(fine-tuning keeps the checkpoint's architecture)"
        )
    trained = {int(z) for z in payload["meta"].get("elements", [])}
    missing = sorted(set(int(z) for z in elements) - trained)
    if missing:
        names = ", ".join(chemical_symbols[z] for z in missing)
        known = ", ".join(chemical_symbols[z] for z in sorted(trained))
        raise PilipError(
            f"--init {path} was trained on {known} only; the new data also have {names}; "
            "pretrain on data with every element"
        )


def model_from_init(payload: dict[str, Any], dtype: str | None = None) -> nn.Module:
    """The checkpoint's model with its weights (CPU, train mode), in ``dtype`` if given."""
    model = model_from_checkpoint(payload, "cpu")
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    model.train()
    return model


@torch.no_grad()
def network_energies(model: nn.Module, structures: Any, batch_size: int = 256) -> torch.Tensor:
    """The network part (without per-element shifts) of the model's energies, (n,) float64 eV."""
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    out = [
        model.network_energy(batch).double()
        for batch in structures.to(device, dtype).batches(batch_size)
    ]
    return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.float64)


@torch.no_grad()
def refit_energy_shifts(model: nn.Module, structures: Any, energy: torch.Tensor) -> np.ndarray:
    """Refit ``model.energy_shift.shift`` to ``energy`` (n,) eV minus the network energies of
    ``structures`` by least squares; the scale and every weight stay. Returns the change of the
    shifts (119,) eV. Elements absent from ``structures`` keep their shift."""
    residual = energy.double().cpu() - network_energies(model, structures)
    batch = torch.repeat_interleave(torch.arange(len(structures)), structures.n_atoms)
    shift, _ = shifts_from_energies(
        structures.numbers.cpu().numpy(), batch.numpy(), residual.numpy()
    )
    present = np.zeros(len(shift), dtype=bool)
    present[np.unique(structures.numbers.cpu().numpy())] = True
    old = model.energy_shift.shift.detach().double().cpu().numpy().copy()
    new = np.where(present, shift, old)
    model.energy_shift.shift.copy_(torch.from_numpy(new))
    return new - old
