"""Fine-tuning: start training from a pilip checkpoint (``pilip train DATASET --init MODEL.pt``).

The typical use: pretrain on cheap energies and forces of many configurations (GFN2-xTB, DFT
gradients), then fine-tune on the few reference energies. The checkpoint gives the
architecture and the weights; ``pilip.potential.train.build_model`` refits the per-element reference
energies by least squares on the new labels (the cheap level's total energies differ from the
reference's by thousands of eV) and keeps the network and its output scale; the optimizer
starts afresh. On the checkpoint's own training data the refit gives back its shifts, so the
fine-tune starts exactly where the checkpoint ended. This module checks that a checkpoint can
start a run and hands over its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ase.data import chemical_symbols

from pilip.errors import PilipError
from pilip.potential.checkpoint import read_checkpoint


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


def init_weights(payload: dict[str, Any], dtype: str) -> dict[str, torch.Tensor]:
    """The checkpoint's weights as a state dict in ``dtype`` (``pilip.potential.train.train``'s
    ``init_weights``: the loop refits the per-element shifts, keeps everything else)."""
    return {
        key: value.to(getattr(torch, dtype)) if value.is_floating_point() else value
        for key, value in payload["model"]["state_dict"].items()
    }
