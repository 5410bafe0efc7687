"""Checkpoints: a model with everything needed to rebuild it, and optionally to resume training.

A checkpoint is one ``torch.save`` of plain containers, tensors and numbers, so it loads with
``torch.load(weights_only=True)`` (no pickled classes, no code execution on load)::

    format_version  int
    model           {"name": "painn", "hparams": {...}, "state_dict": {...}}
    meta            {"config": {...}, "cutoff": A, "elements": [Z, ...],
                     "energy_shifts": [[Z, eV], ...], "pilip_version": str,
                     "recipes": [{"name": "delta", "baseline": {...}}, ...]
                                 (how the run trained, pilip.potential.recipes), ...}
    train_state     (last.pt only) optimizer / scheduler / EMA / RNG state, epoch counters

A committee (``pilip train --ensemble N``, format 3) holds its members' networks in ``model``
as ``"members": [{"name", "hparams", "state_dict"}, ...]`` instead of one ``state_dict``
(pilip.potential.committee); ``load_model`` returns the members' mean.

``torch.save`` writes a zip archive with a CRC-32 per entry, which ``torch.load`` never checks:
a flipped bit in the weights loads as other weights (8 of 10 random flips in a small
``model.pt``). :func:`read_checkpoint` therefore verifies every entry's CRC first.

``load_model`` returns the model in eval mode and ``meta`` with ``format_version``, ``model``
and ``hparams`` added; each recipe of ``meta["recipes"]`` turns the network into the potential
it stands for (a Delta model: baseline + network), so every user of a checkpoint gets it
without a flag. Formats 1 (before recipe records: ``baseline`` and ``init`` keys) and 2
(before committees; the layout of a single model is unchanged) still load.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pilip import __version__
from pilip.atomic_io import atomic_path
from pilip.errors import PilipError, first_line

FORMAT_VERSION = 3
# 1: recipes as meta["baseline"] / meta["init"]; 2: no committees
READABLE_FORMATS = (1, 2, 3)


def energy_shifts(model: nn.Module) -> list[list[float]]:
    """[[Z, shift eV], ...] for the elements with a non-zero fitted shift."""
    shift = getattr(getattr(model, "energy_shift", None), "shift", None)
    if shift is None:
        return []
    return [[int(z), float(shift[z])] for z in torch.nonzero(shift).flatten().tolist()]


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    model_name: str,
    meta: dict[str, Any],
    state_dict: dict[str, torch.Tensor] | None = None,
    train_state: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically.

    ``state_dict`` overrides the model's own weights (e.g. the EMA weights for the best
    model); ``meta`` must hold plain JSON-like values; ``cutoff`` and ``energy_shifts`` are
    filled from the model when absent.
    """
    weights = model.state_dict() if state_dict is None else state_dict
    meta = dict(meta)
    meta.setdefault("cutoff", float(getattr(model, "cutoff", 0.0)))
    meta.setdefault("energy_shifts", energy_shifts(model))
    meta.setdefault("pilip_version", __version__)
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model": {
            "name": model_name,
            "hparams": model.hparams(),
            "state_dict": {k: v.detach().cpu() for k, v in weights.items()},
        },
        "meta": meta,
    }
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, loaded with ``weights_only=True``; one-line errors if unusable."""
    path = Path(path)
    if not path.is_file():
        raise PilipError(f"{path}: no such checkpoint; train one with `pilip train`")
    try:
        _verify_archive(path)
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        # torch's first sentence; the rest is advice for developers
        first = first_line(exc).split(". ")[0]
        raise PilipError(
            f"{path}: not a pilip checkpoint ({first}); it is damaged or not from pilip: "
            "delete it and rerun `pilip train` (a deleted last.pt starts the run afresh)"
        ) from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise PilipError(f"{path}: not a pilip checkpoint (no format_version)")
    if payload["format_version"] not in READABLE_FORMATS:
        raise PilipError(
            f"{path}: checkpoint format {payload['format_version']} but this pilip reads "
            f"format {FORMAT_VERSION}; use the pilip version that wrote it"
        )
    return payload


def _verify_archive(path: Path) -> None:
    """Raise when an entry of the zip archive ``torch.save`` wrote fails its CRC-32."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"CRC mismatch in {bad.split('/', 1)[-1]}")


def model_from_checkpoint(
    payload: dict[str, Any], device: str | torch.device, source: str = "checkpoint"
) -> nn.Module:
    """Rebuild the model of a checkpoint dict and load its weights (on ``device``): the
    network, or a committee's ``pilip.potential.committee.Committee`` (one-line PilipError
    naming ``source`` when its members do not form one)."""
    from pilip.potential.models import build_model

    spec = payload["model"]
    if "members" in spec:
        from pilip.potential.committee import committee_from_checkpoint

        return committee_from_checkpoint(payload, device, source)
    model = build_model(spec["name"], **spec["hparams"])
    model.load_state_dict(spec["state_dict"])
    return model.to(device)


def load_model(
    path: str | Path, device: str | torch.device = "cpu", **inputs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on ``device``, meta) from a checkpoint written by ``pilip train``.

    ``model(batch)`` gives per-structure energies in eV. ``meta`` holds ``config`` (the training
    configuration), ``format_version``, ``cutoff`` (A), ``elements``, ``energy_shifts`` and the
    model's ``model`` name and ``hparams``. A committee's network is the mean of its members
    (``pilip.potential.committee``). Each of its recipes wraps the network (a Delta
    checkpoint comes back as baseline + model; a one-line PilipError says what to install if
    its baseline cannot run). ``inputs`` go to the recipes (``baseline_labels`` = labels
    tables and ``structures`` = the table of the structures to evaluate, for a Delta model whose
    baseline runs only from tables).
    """
    from pilip.potential.recipes import inference_model, recipe_records

    payload = read_checkpoint(path, device)
    model = model_from_checkpoint(payload, device, str(path))
    model = inference_model(model, payload["meta"], str(path), **inputs)
    model.eval()
    meta = dict(payload["meta"])
    meta["recipes"] = recipe_records(meta)
    meta["format_version"] = payload["format_version"]
    meta["model"] = payload["model"]["name"]
    meta["hparams"] = dict(payload["model"]["hparams"])
    return model, meta
