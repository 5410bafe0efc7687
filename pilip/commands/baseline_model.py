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
    from pilip.potential.models import MODELS

    parser.add_argument("dataset", help="dataset table whose training split fits the offsets")
    parser.add_argument("--baseline", required=True, help="gfn2-xtb | gfn1-xtb | a reference")
    parser.add_argument("--out", required=True, help="folder for model.pt (and the labels)")
    parser.add_argument("--config", help="config.yaml whose references may name the baseline")
    parser.add_argument(
        "--baseline-labels", nargs="+", help="labels tables of the baseline (no compute)"
    )
    parser.add_argument("--model", default="painn", choices=tuple(MODELS))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import torch

    from pilip.potential.baselines import resolve_baseline
    from pilip.potential.checkpoint import save_checkpoint
    from pilip.potential.data import TRAIN, load_dataset
    from pilip.potential.models import build_model, data_hparams
    from pilip.potential.recipes.delta import Delta, baseline_targets

    torch.set_num_threads(max(1, args.threads))
    config = None
    if args.config:
        from pilip.config import load_config

        config = load_config(args.config)
    out = Path(args.out)
    # a level that cannot run in process (Psi4) is read from --baseline-labels: a tabled
    # baseline, evaluated with the same tables (pilip evaluate --baseline-labels)
    baseline = resolve_baseline(
        args.baseline, config, args.config, tabled=bool(args.baseline_labels)
    )
    data = {TRAIN: load_dataset(args.dataset)[TRAIN]}  # the offsets come from training data
    setup, shifted, _ = baseline_targets(
        baseline, data, dataset=args.dataset, run_dir=out, config_path=args.config,
        labels_paths=args.baseline_labels, log=lambda message: print(message, file=sys.stderr),
    )  # fmt: skip
    train = shifted[TRAIN]
    model = build_model(args.model, **data_hparams(args.model, {"dtype": "float64"}, train))
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
        "recipes": [
            {
                "name": Delta.name,
                **setup.record(),
                "alone": True,
                **({} if baseline.in_process else {"tabled": True}),
            }
        ],
    }
    save_checkpoint(out / "model.pt", model=model, model_name=args.model, meta=meta)
    print(f"wrote {out / 'model.pt'}: {baseline.name} + per-element energies")
    return 0
