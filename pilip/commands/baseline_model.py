"""``pilip baseline-model``: the cheap level alone, as a checkpoint evaluate/md/report read.

The checkpoint is a Delta model whose network is identically zero: energy = baseline + the
per-element energies fitted by least squares to (reference - baseline) on the training split,
forces = the baseline's. So ``pilip evaluate`` and ``pilip md`` report what the cheap level
buys without any training, beside the trained recipes.
"""

from __future__ import annotations

import argparse

HELP = "write the cheap level alone (baseline + fitted per-element energies) as a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset table whose training split fits the offsets")
    parser.add_argument("--baseline", required=True, help="gfn2-xtb | gfn1-xtb | a reference")
    parser.add_argument("--out", required=True, help="folder for model.pt (and the labels)")
    parser.add_argument("--config", help="config.yaml whose references may name the baseline")
    parser.add_argument(
        "--baseline-labels", nargs="+", help="labels tables of the baseline (no compute)"
    )
    parser.add_argument("--model", default="painn", choices=("painn", "schnet"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from pilip.potential.checkpoint import save_checkpoint
    from pilip.potential.data import TRAIN, load_dataset
    from pilip.potential.models import build_model
    from pilip.potential.multifidelity import prepare_baseline

    torch.set_num_threads(max(1, args.threads))
    config = None
    if args.config:
        from pilip.config import load_config

        config = load_config(args.config)
    out = Path(args.out)
    data = {TRAIN: load_dataset(args.dataset)[TRAIN]}  # the offsets come from training data
    setup, shifted, _ = prepare_baseline(
        args.baseline,
        data,
        dataset=args.dataset,
        run_dir=out,
        config=config,
        config_path=args.config,
        labels_path=args.baseline_labels,
        log=lambda message: print(message, file=__import__("sys").stderr),
    )
    train = shifted[TRAIN]
    model = build_model(args.model, dtype="float64")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()  # no network: energy = baseline + per-element energies
    batch = torch.repeat_interleave(torch.arange(len(train)), train.n_atoms)
    model.energy_shift.fit(train.numbers, batch, train.energy)
    meta = {
        "config": {"model": args.model, "losses": [], "dtype": "float64"},
        "elements": train.elements(),
        "n_train": len(train),
        "n_val": 0,
        "n_unlabelled": 0,
        "recipe": "baseline_only",
        **setup.meta(),
    }
    save_checkpoint(out / "model.pt", model=model, model_name=args.model, meta=meta)
    print(f"wrote {out / 'model.pt'}: {setup.baseline.name} + per-element energies")
    return 0
