"""``pilip evaluate MODEL DATASET --out DIR``: errors on held-out energies and forces, plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "evaluate a trained model: metrics.json (eV, eV/A), parity plots, learning curves"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="checkpoint written by pilip train (model.pt)")
    parser.add_argument("dataset", type=Path, help="dataset table (Parquet) from pilip collect")
    parser.add_argument(
        "--out", "-o", type=Path, required=True, help="folder for metrics.json and the PNG plots"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="structures per model call (default 64)"
    )
    parser.add_argument(
        "--training-log",
        type=Path,
        default=None,
        help="training metrics.csv for the learning curves (default: metrics.csv beside MODEL)",
    )
    parser.add_argument(
        "--title", default=None, help="plot title prefix (default: the model's folder name)"
    )
    parser.add_argument(
        "--baseline-labels",
        nargs="+",
        help="labels tables of a Delta model's baseline for the dataset's structures (needed "
        "when the baseline cannot run in process, e.g. a Psi4 DFT level)",
    )


def run(args: argparse.Namespace) -> int:
    from pilip.errors import PilipError
    from pilip.potential.checkpoint import load_model
    from pilip.potential.devices import resolve_device
    from pilip.potential.evaluate import METRICS_FILE, write_evaluation

    if args.batch_size < 1:
        raise PilipError(f"--batch-size {args.batch_size}: use a positive number")
    if not args.dataset.is_file():
        raise PilipError(f"{args.dataset}: no such dataset; build it with pilip collect")
    log = args.training_log
    if log is None and (args.model.parent / "metrics.csv").is_file():
        log = args.model.parent / "metrics.csv"
    device = resolve_device(args.device)
    inputs = {}
    if args.baseline_labels:
        inputs = {"baseline_labels": args.baseline_labels, "structures": args.dataset}
    model, meta = load_model(args.model, device, **inputs)
    if args.baseline_labels and not hasattr(model, "baseline"):
        raise PilipError(f"--baseline-labels: {args.model} is not a Delta model; drop them")
    metrics = write_evaluation(
        model,
        meta,
        args.dataset,
        args.out,
        device=device,
        model_path=args.model,
        training_log=log,
        batch_size=args.batch_size,
        title=args.title if args.title is not None else args.model.parent.name,
        warn=lambda message: print(f"pilip evaluate: warning: {message}", file=sys.stderr),
    )

    def show(value: float | None, scale: float = 1.0, fmt: str = ".4g") -> str:
        return "n/a" if value is None else format(value * scale, fmt)

    print(
        f"energy RMSE {show(metrics['energy_rmse_mev_per_atom'])} meV/atom "
        f"({metrics['n_energy']} test structures); force RMSE {show(metrics['force_rmse'])} eV/A "
        f"({metrics['n_force_structures']} structures) -> {args.out / METRICS_FILE}"
    )
    return 0
