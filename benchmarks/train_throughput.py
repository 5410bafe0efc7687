"""Structures per second of ``pilip train`` itself, by how the weak losses are run.

Trains PaiNN (pilip's defaults: 128 features, 3 interactions) on the energies of acetylacetone
(``train_300K.xyz``, 15 atoms) with energy + PITC + PISC for a fixed number of epochs, three
ways, one after the other in one process:

  three_calls   --weak-mode three_calls --static-shapes never   (the paper's way)
  fused         --weak-mode fused       --static-shapes never   (one batch of 3x, eager)
  fused_static  --weak-mode fused       --static-shapes always  (padded; a CUDA graph on a GPU)

and reports the median epoch time over the epochs after the first (which holds the capture),
training structures per second and the ratios. Epoch times come from ``metrics.csv`` and
include the per-epoch validation pass (50 structures), as a user's run does.

    python benchmarks/train_throughput.py --device cuda --out DIR
    python benchmarks/train_throughput.py --device cpu --epochs 3 --n-train 64

Reads the data in place (``--data``); exits 0 with a message when it is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from acac_data_efficiency import read_extxyz  # noqa: E402

from pilip.potential.data import TRAIN, VAL, Structures, structures_from_arrays  # noqa: E402
from pilip.potential.train import TrainConfig, train  # noqa: E402

WAYS = {
    "three_calls": {"weak_mode": "three_calls", "static_shapes": "never"},
    "fused": {"weak_mode": "fused", "static_shapes": "never"},
    "fused_static": {"weak_mode": "fused", "static_shapes": "always"},
}


def structures(frames: list[dict]) -> Structures:
    return structures_from_arrays(
        [f["numbers"] for f in frames],
        [f["positions"] for f in frames],
        np.array([f["energy"] for f in frames]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "acac"
    parser.add_argument("--data", type=Path, default=default)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-train", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    path = args.data / "train_300K.xyz"
    if not path.is_file():
        print(f"skipped: {path} not found")
        return 0
    if args.device == "cpu":
        torch.set_num_threads(1)
    frames = read_extxyz(path)
    data = {TRAIN: structures(frames[: args.n_train]), VAL: structures(frames[-50:])}
    results = []
    for way in args.ways.split(","):
        config = TrainConfig(
            model="painn", losses=["energy", "pitc", "pisc"], epochs=args.epochs,
            batch_size=args.batch_size, device=args.device, patience=10**6,
            checkpoint_interval_s=1e9, **WAYS[way],
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            train(config, data, tmp, progress=False, resume=False)
            with open(Path(tmp) / "metrics.csv", newline="") as handle:
                wall = [float(r["wall_time_s"]) for r in csv.DictReader(handle)]
        epoch_times = np.diff([0.0, *wall])
        median = statistics.median(epoch_times[1:] if len(epoch_times) > 1 else epoch_times)
        results.append(
            {
                "way": way,
                "first_epoch_s": float(epoch_times[0]),
                "median_epoch_s": median,
                "structures_per_s": args.n_train / median,
            }
        )
        print(f"{way}: median epoch {median:.3f} s", flush=True)
    base = next((r for r in results if r["way"] == "three_calls"), results[0])
    lines = [
        f"pilip train, PaiNN defaults, {args.n_train} acac structures, batch {args.batch_size}, "
        f"{args.epochs} epochs, device {args.device} ({torch.__version__})",
        "",
        "| way | first epoch (s) | median epoch (s) | structures/s | x three_calls |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = r["structures_per_s"] / base["structures_per_s"]
        lines.append(
            f"| {r['way']} | {r['first_epoch_s']:.2f} | {r['median_epoch_s']:.3f} "
            f"| {r['structures_per_s']:.0f} | {ratio:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_throughput.md").write_text(text + "\n")
        (args.out / "train_throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
