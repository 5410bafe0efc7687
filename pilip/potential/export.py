"""Exporting pilip checkpoints to other programs' model files (``pilip export-model``)."""

from __future__ import annotations

from pathlib import Path

import torch

from pilip.atomic_io import atomic_path
from pilip.errors import PilipError


def export_mace(checkpoint: str | Path, out: str | Path, dtype: str = "float64") -> Path:
    """Write the MACE of pilip ``checkpoint`` as mace-torch's pickled model to ``out``.

    The file holds a ``mace.modules.ScaleShiftMACE`` (``torch.save`` of the module, as
    mace-torch writes its own models) whose total energies and forces are pilip's. One-line
    PilipError for a checkpoint of another architecture or one whose recipes wrap the network
    (Delta).
    """
    from pilip.potential.checkpoint import model_from_checkpoint, read_checkpoint
    from pilip.potential.recipes import recipe_class, recipe_records

    payload = read_checkpoint(checkpoint, "cpu")
    name = payload["model"]["name"]
    if name != "mace":
        raise PilipError(
            f"{checkpoint} is a {name} model; --format mace exports MACE models only "
            "(train one with --model mace)"
        )
    for record in recipe_records(payload["meta"]):
        if recipe_class(record["name"]).wraps_inference:
            raise PilipError(
                f"{checkpoint} is a {record['name']} model (its network alone is not the "
                "potential) and cannot be exported standalone; distil it into a plain MACE "
                "(train on its predicted energies and forces) and export that"
            )
    model = model_from_checkpoint(payload, "cpu")
    exported = model.to_mace(dtype)
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(exported, tmp)
    return out
