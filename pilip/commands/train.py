"""``pilip train``: fit an energy model to a dataset table, optionally with the weak losses."""

from __future__ import annotations

import argparse
import sys

HELP = "train a SchNet/PaiNN model on a dataset's energies (optionally + PITC/PISC weak losses)"

# CLI option -> TrainConfig key, for the options that override config / variant values.
_OVERRIDES = {
    "model": "model",
    "losses": "losses",
    "n_train": "n_train",
    "seed": "seed",
    "device": "device",
    "epochs": "epochs",
    "minutes": "minutes",
    "cpu_minutes": "cpu_minutes",
    "eps": "eps",
    "k": "k",
    "w_energy": "w_energy",
    "w_forces": "w_forces",
    "w_pitc": "w_pitc",
    "w_pisc": "w_pisc",
    "per_atom": "per_atom",
    "batch_size": "batch_size",
    "lr": "lr",
    "patience": "patience",
    "dtype": "dtype",
    "weak_mode": "weak_mode",
    "static_shapes": "static_shapes",
}
_MODEL_OVERRIDES = ("cutoff", "n_features", "n_interactions")
NO_CONFIG_NOTE = (
    "no --config: the model at its own default size (config.json records it), larger than "
    "the demo study's, which config.yaml shrinks for 2 CPU cores; pass --config config.yaml "
    "to train the study's size"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset table (Parquet) with split and energy columns")
    parser.add_argument("--out", required=True, help="run folder: model.pt, last.pt, metrics.csv")
    parser.add_argument("--config", help="config.yaml whose `training` section gives defaults")
    parser.add_argument("--variant", help="a name under training.variants in --config")
    parser.add_argument("--model", choices=("painn", "schnet"))
    parser.add_argument("--losses", help="comma list of energy, forces, pitc, pisc")
    parser.add_argument("--n-train", type=int, help="subsample N training structures (by seed)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (CUDA when available) | cpu | cuda")
    parser.add_argument("--epochs", type=int, help="budget in epochs")
    parser.add_argument("--minutes", type=float, help="budget in wall-clock minutes")
    parser.add_argument(
        "--cpu-minutes", type=float, help="budget in CPU minutes of the training process"
    )
    parser.add_argument(
        "--unlabelled", help="configurations table (Parquet) fed to the weak losses only"
    )
    parser.add_argument(
        "--baseline",
        help="Delta-learning: learn reference minus this cheap level (gfn2-xtb, gfn1-xtb or a "
        "--config reference that runs in process); evaluate/md/the calculator add it back",
    )
    parser.add_argument(
        "--baseline-labels",
        nargs="+",
        help="labels tables of --baseline for the dataset's structures (read, not computed)",
    )
    parser.add_argument(
        "--init",
        help="fine-tune: start from this checkpoint (its architecture and weights; "
        "per-element energies refitted, fresh optimizer)",
    )
    parser.add_argument("--eps", type=float, help="weak-loss perturbation half-width, Angstrom")
    parser.add_argument("--k", type=float, help="second-order factor in [0, 1] (0.5 trapezoid)")
    parser.add_argument("--w-energy", type=float, help="weight of the energy loss")
    parser.add_argument("--w-forces", type=float, help="weight of the force loss")
    parser.add_argument("--w-pitc", type=float, help="weight of PITC")
    parser.add_argument("--w-pisc", type=float, help="weight of PISC")
    parser.add_argument(
        "--per-atom",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="divide energy and weak-loss residuals by the atom count",
    )
    parser.add_argument(
        "--weak-mode",
        choices=("auto", "fused", "three_calls"),
        help="weak losses as one fused call or three calls (auto: fused on CUDA)",
    )
    parser.add_argument(
        "--static-shapes",
        choices=("auto", "always", "never"),
        help="always: pad batches to one shape, captured as a CUDA graph on a GPU; never; "
        "auto (default): eager until the graph step is proven on a GPU",
    )
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="AdamW learning rate")
    parser.add_argument("--patience", type=int, help="early stopping, epochs")
    parser.add_argument("--dtype", choices=("float32", "float64"))
    parser.add_argument("--cutoff", type=float, help="model cutoff radius, Angstrom")
    parser.add_argument("--n-features", type=int, help="model feature width")
    parser.add_argument("--n-interactions", type=int, help="message-passing layers")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument(
        "--restart-if-changed",
        action="store_true",
        help="start afresh when --out/last.pt was written with another configuration "
        "(default: refuse)",
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_config(args: argparse.Namespace) -> tuple[object, str | None]:
    """(TrainConfig, unlabelled path): defaults < --config training < --variant < options."""
    from pilip.errors import PilipError
    from pilip.potential.train import TrainConfig

    values: dict = {}
    unlabelled, shared_unlabelled = None, False
    if args.config:
        from pilip.config import load_config

        training = dict(load_config(args.config).get("training", {}))
        variants = training.pop("variants", {})
        unlabelled = training.pop("unlabelled", None)
        shared_unlabelled = True  # training.unlabelled: for the weak variants only
        for key in ("threads", "mem_mb", "runtime", "gpus"):
            training.pop(key, None)
        values.update(training)
        if args.variant:
            if args.variant not in variants:
                known = ", ".join(sorted(variants)) or "none"
                raise PilipError(
                    f"{args.config}: training.variants has no {args.variant!r} (known: {known})"
                )
            overrides = dict(variants[args.variant])
            for key in ("baseline", "init"):  # multi-fidelity recipes; the options win
                value = overrides.pop(key, None)
                if value is not None and getattr(args, key, None) is None:
                    setattr(args, key, value)
            if "unlabelled" in overrides:
                unlabelled = overrides.pop("unlabelled")
                shared_unlabelled = False
            model_params = {**values.get("model_params", {}), **overrides.pop("model_params", {})}
            values.update(overrides)
            values["model_params"] = model_params
    elif args.variant:
        raise PilipError("--variant needs --config (the variants live in training.variants)")
    for option, key in _OVERRIDES.items():
        value = getattr(args, option)
        if value is not None:
            values[key] = value
    model_params = dict(values.get("model_params", {}))
    for option in _MODEL_OVERRIDES:
        value = getattr(args, option)
        if value is not None:
            model_params[option] = value
    values["model_params"] = model_params
    if args.unlabelled is not None:
        unlabelled = args.unlabelled
    config = TrainConfig.from_dict(values, source=args.config or "pilip train")
    if args.unlabelled is None and shared_unlabelled and not config.weak:
        unlabelled = None
    return config, unlabelled


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from pilip.errors import PilipError
    from pilip.potential.data import load_dataset, load_unlabelled, training_references
    from pilip.potential.devices import resolve_device
    from pilip.potential.losses import FORCES
    from pilip.potential.train import TrainingInterrupted, train

    config, unlabelled_path = build_config(args)
    config.validate()
    resolve_device(config.device)
    if args.threads is not None:
        if args.threads < 1:
            raise PilipError(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PilipError(f"--out {out}: exists and is not a folder; choose a folder")
    data = load_dataset(
        args.dataset, forces=FORCES in config.losses, n_train=config.n_train, seed=config.seed
    )
    unlabelled = load_unlabelled(unlabelled_path) if unlabelled_path else None
    if unlabelled is not None and not config.weak:
        raise PilipError("--unlabelled feeds only the weak losses: add pitc, pisc to --losses")
    if args.baseline_labels and not args.baseline:
        raise PilipError("--baseline-labels needs --baseline NAME (the method they come from)")
    meta = {"dataset": str(args.dataset), "reference": training_references(args.dataset)}
    study = None
    if args.config and args.baseline:
        from pilip.config import load_config

        study = load_config(args.config)
    # every check of --baseline and --init before any baseline calculation or training
    baseline = None
    if args.baseline:
        from pilip.potential.baselines import resolve_baseline

        baseline = resolve_baseline(args.baseline, study, args.config)
    elements = sorted(
        set().union(*(s.elements() for s in (*data.values(), unlabelled) if s is not None))
    )
    if args.init:
        from pilip.potential.finetune import check_compatible, init_checkpoint
        from pilip.potential.multifidelity import check_init_baseline

        payload = init_checkpoint(args.init)
        check_compatible(payload, args.init, model=args.model,
                         model_params=config.model_params, elements=elements)  # fmt: skip
        check_init_baseline(payload, args.init, baseline)

    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "train.log", "a", encoding="utf-8")  # noqa: SIM115

    def log(message: str) -> None:
        print(f"pilip train: {message}", file=sys.stderr)
        print(message, file=log_file, flush=True)

    setup, init_weights = None, None
    try:
        if args.baseline:
            from pilip.potential.multifidelity import prepare_baseline

            setup, data, unlabelled = prepare_baseline(
                args.baseline, data, dataset=args.dataset, run_dir=out, unlabelled=unlabelled,
                unlabelled_path=unlabelled_path, config=study, config_path=args.config,
                labels_path=args.baseline_labels, log=log,
            )  # fmt: skip
            meta.update(setup.meta())
        if args.init:
            from dataclasses import replace

            from pilip.potential.multifidelity import init_model

            init_weights, architecture = init_model(
                args.init, model=args.model, model_params=config.model_params,
                elements=elements, dtype=config.dtype, setup=setup,
            )  # fmt: skip
            config = replace(config, **architecture)
            meta["init"] = str(args.init)
            log(f"fine-tuning from {args.init} ({architecture['model']})")
        log(
            f"{args.dataset}: {len(data['train'])} training, {len(data['val'])} validation "
            f"structures" + (f", {len(unlabelled)} unlabelled" if unlabelled else "")
            + f"; model {config.model}, losses {','.join(config.losses)}"
        )  # fmt: skip
        if not args.config:
            log(NO_CONFIG_NOTE)
        result = train(
            config,
            data,
            out,
            unlabelled=unlabelled,
            init_weights=init_weights,
            meta=meta,
            total_surface=setup if setup is not None and config.weak else None,
            resume=not args.no_resume,
            restart_if_changed=args.restart_if_changed,
            progress=False if args.no_progress else None,
            log=log,
        )
    except TrainingInterrupted as stop:
        log(f"interrupted by {stop}")
        return 128 + stop.signum
    finally:
        log_file.close()
    print(
        f"pilip train: best epoch {result.best_epoch}, validation energy RMSE "
        f"{1000 * result.best_val_energy_rmse:.2f} meV -> {out / 'model.pt'}",
        file=sys.stderr,
    )
    return 0
