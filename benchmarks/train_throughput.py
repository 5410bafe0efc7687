"""Structures per second of ``pilip train`` itself, by how the weak losses are run.

Trains PaiNN (pilip's defaults: 128 features, 3 interactions) on the energies of acetylacetone
(``train_300K.xyz``, 15 atoms) with energy + PITC + PISC for a fixed number of epochs, three
ways, one after the other, each in its own `pilip train` process:

  three_calls   --weak-mode three_calls --static-shapes never   (the paper's way)
  fused         --weak-mode fused       --static-shapes never   (one batch of 3x, eager)
  fused_static  --weak-mode fused       --static-shapes always  (padded; a CUDA graph on a GPU)

and reports the median epoch time over the epochs after the first (which holds the capture),
training structures per second and the ratios. Epoch times come from ``metrics.csv`` and
include the per-epoch validation pass (50 structures), as a user's run does.

Each way is one ``pilip train`` process on a dataset table of the first ``--n-train``
structures (split train) and the last 50 (split val) of ``train_300K`` (``benchmarks/acac.py``).

    python -m benchmarks.train_throughput --device cuda --out DIR
    python -m benchmarks.train_throughput --device cpu --epochs 3 --n-train 128 --out DIR
    python -m benchmarks.train_throughput --device cpu --out DIR --smoke     # seconds (tests)

Reads the data in place (``--data``); exits 0 with a message when it is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import acac
from pilip import tables

WAYS = {
    "three_calls": ["--weak-mode", "three_calls", "--static-shapes", "never"],
    "fused": ["--weak-mode", "fused", "--static-shapes", "never"],
    "fused_static": ["--weak-mode", "fused", "--static-shapes", "always"],
}
# the training section of the study config: no early stopping, no last.pt before the end
TRAINING = {"model": "painn", "patience": 10**6, "checkpoint_interval_s": 1e9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=acac.DEFAULT_DATA)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-train", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--smoke", action="store_true", help="16 structures, batch 8, 2 epochs (tests)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_train, args.batch_size, args.epochs = 16, 8, 2
    if not acac.available(args.data):
        print(f"skipped: no acac data at {args.data}")
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, test = acac.import_tables(args.data, work)
        pool = tables.read_table(train)
        n = pool.num_rows
        dataset = acac.split_dataset(
            pool, tables.read_table(test).slice(0, 0), np.arange(args.n_train),
            np.arange(n - acac.N_VAL, n), work / "dataset.parquet",
        )  # fmt: skip
        config = acac.study_config(work / "study.yaml", TRAINING, {"weak": {}})
        for way in args.ways.split(","):
            run = work / way
            acac.train(
                dataset, run, config, "weak", "--losses", "energy,pitc,pisc",
                "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                "--device", args.device, *WAYS[way],
            )  # fmt: skip
            with open(run / "metrics.csv", newline="") as handle:
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
