"""Precision of the weak losses in float32: PITC of one model in float64 and in float32.

The weak residuals are differences of ~1e-3 eV between total energies of ~1e4 eV. Float32
resolves such totals only to ~1e-3 eV, so pilip's models keep the per-element reference
energy (which cancels from the residuals) out of them and sum it in float64
(``pilip.potential.models.common.ShiftedEnergyModel``). This script measures PITC of a freshly
initialised PaiNN (64 features, shifts fitted on the structures' energies) on 16
acetylacetone structures three ways, side by side, with the same perturbations:

  float64               the reference value
  float32, totals       the model called as a plain callable: residuals from total energies
                        (how pilip computed them before the split)
  float32, split        the model itself: pilip's way

    python -m benchmarks.weak_precision [--data ../shared/data/acac] [--out DIR]

Reads ``train_300K.xyz`` in place; exits 0 with a message when the data are absent.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from pilip import keys
from pilip.potential.losses import LossTerm, WeakLossOptions, compute_losses
from pilip.potential.models import build_model

GRID = [(0.002, 0.0), (0.002, 0.5), (0.01, 0.0), (0.01, 0.5), (0.05, 0.0), (0.05, 0.5)]


def make_batch(frames: list, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The batch dict (pilip.keys names) of ASE ``frames``."""
    n_atoms = torch.tensor([len(a) for a in frames])
    return {
        keys.NUMBERS: torch.from_numpy(np.concatenate([a.numbers for a in frames])).long(),
        keys.POSITIONS: torch.from_numpy(np.concatenate([a.positions for a in frames])).to(dtype),
        keys.BATCH: torch.repeat_interleave(torch.arange(len(frames)), n_atoms),
        keys.N_ATOMS: n_atoms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "acac"
    parser.add_argument("--data", type=Path, default=default)
    parser.add_argument("--structures", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="also write DIR/weak_precision.md")
    parser.add_argument("--smoke", action="store_true", help="2 structures (tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.structures = 2
    path = args.data / "train_300K.xyz"
    if not path.is_file():
        print(f"skipped: {path} not found")
        return 0
    torch.set_num_threads(1)
    frames = read(path, f":{args.structures}")
    torch.manual_seed(0)
    model32 = build_model("painn", n_features=64)
    batch32 = make_batch(frames, torch.float32)
    energies = torch.tensor([a.get_potential_energy() for a in frames], dtype=torch.float64)
    model32.energy_shift.fit(batch32[keys.NUMBERS], batch32[keys.BATCH], energies)
    # the float64 model carries exactly the float32 model's weights and shifts
    model64 = copy.deepcopy(model32).double()
    batch64 = {k: (v.double() if v.is_floating_point() else v) for k, v in batch32.items()}

    def as_totals(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model32(batch)  # a plain callable: pilip cannot split off the reference

    terms = [LossTerm("pitc", 1.0)]
    lines = [
        f"PaiNN (64 features, fresh), {len(frames)} acac structures, mean total energy "
        f"{float(energies.mean()):.0f} eV; PITC in eV^2, same perturbations in each column.",
        "",
        "| eps (A) | k | float64 | float32, totals | float32, split | split / float64 |",
        "|---|---|---|---|---|---|",
    ]
    for eps, k in GRID:
        options = WeakLossOptions(eps=eps, k=k, mode="three_calls")
        row = []
        for model, batch in ((model64, batch64), (as_totals, batch32), (model32, batch32)):
            with torch.no_grad():
                value = compute_losses(
                    model, batch, terms, torch.Generator().manual_seed(1), options
                )
            row.append(float(value["pitc"]))
        lines.append(
            f"| {eps} | {k} | {row[0]:.2e} | {row[1]:.2e} | {row[2]:.2e} | {row[2] / row[0]:.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "weak_precision.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
