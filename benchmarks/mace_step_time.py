"""Training-step time of MACE against PaiNN on acetylacetone batches (CPU or CUDA).

One step = zero_grad + ``compute_losses`` + backward + AdamW step, at each model's default
size (``pilip/potential/models``), float32, on batches of ``--batch-size`` acac geometries
(15 atoms) from ``--xyz``. Modes: energy-only, energy+forces, energy + PITC + PISC fused.
Prints a Markdown table of the median step time (and CPU time) over ``--repeats`` steps after
``--warmup``.

    OMP_NUM_THREADS=1 python -m benchmarks.mace_step_time \\
        --xyz ../shared/data/acac/train_300K.xyz --batch-size 16
    python -m benchmarks.mace_step_time --xyz ... --smoke    # batch 2, one step (tests)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pilip import keys
from pilip.potential.losses import LossTerm, WeakLossOptions, compute_losses
from pilip.potential.models import build_model

MODES = {
    "energy": [LossTerm("energy", 1.0)],
    "energy+forces": [LossTerm("energy", 1.0), LossTerm("forces", 10.0)],
    "weak_fused": [LossTerm("energy", 1.0), LossTerm("pitc", 1.0), LossTerm("pisc", 0.01)],
}


def batch_of(frames, device: torch.device) -> dict[str, torch.Tensor]:
    numbers = torch.cat([torch.as_tensor(a.numbers, dtype=torch.long) for a in frames])
    positions = torch.cat([torch.as_tensor(a.positions, dtype=torch.float32) for a in frames])
    n_atoms = torch.tensor([len(a) for a in frames])
    batch = {
        keys.NUMBERS: numbers,
        keys.POSITIONS: positions,
        keys.N_ATOMS: n_atoms,
        keys.BATCH: torch.repeat_interleave(torch.arange(len(frames)), n_atoms),
        keys.ENERGY: torch.zeros(len(frames)),
        keys.FORCES: torch.zeros_like(positions),
    }
    return {k: v.to(device) for k, v in batch.items()}


def time_step(model, batch, terms, repeats: int, warmup: int, device) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of one training step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator(device=device).manual_seed(0)
    options = WeakLossOptions(eps=0.01, k=0.5, mode="fused")
    walls, cpus = [], []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        losses = compute_losses(model, batch, terms, generator, options)
        losses["total"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            walls.append(1000 * (time.perf_counter() - wall))
            cpus.append(1000 * (time.process_time() - cpu))
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xyz", required=True, help="acac geometries (extxyz)")
    parser.add_argument("--models", default="painn,mace")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="batch 2, one step (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.batch_size, args.repeats, args.warmup = 2, 1, 0
    from ase.io import read

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = batch_of(read(args.xyz, index=f":{args.batch_size}"), device)
    atoms = int(batch[keys.N_ATOMS][0])
    print(f"device {device}, torch {torch.__version__}, {args.threads} thread(s), batch "
          f"{args.batch_size} x {atoms} atoms, median of {args.repeats}")  # fmt: skip
    print("\n| model | parameters | mode | step (ms) | CPU (ms) |\n|---|---:|---|---:|---:|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(name).to(device)
        n_params = sum(p.numel() for p in model.parameters())
        for mode, terms in MODES.items():
            wall, cpu = time_step(model, batch, terms, args.repeats, args.warmup, device)
            print(f"| {name} | {n_params} | {mode} | {wall:.0f} | {cpu:.0f} |", flush=True)


if __name__ == "__main__":
    main()
