"""``pilip train``: fit an energy model to a dataset table, by a recipe (plain, Delta,
fine-tuning), optionally with the weak losses.

Every training option is derived from its declaration (pilip.potential.train_config.TrainConfig
and each recipe's settings): ``pilip train --help`` lists them with their defaults.
"""

from __future__ import annotations

import argparse
import sys

HELP = "train an energy model on a dataset's energies (a recipe; optionally + PITC/PISC)"
EPILOG = (
    "The defaults shown are pilip's own; a --config file's training section (and its "
    "--variant) override them, and options override both."
)

# model hyper-parameters with an option of their own (the rest: model_params in a --config)
MODEL_OPTIONS = {
    "cutoff": (float, "model cutoff radius, Angstrom"),
    "n_features": (int, "model feature width"),
    "n_interactions": (int, "message-passing layers"),
}
NO_CONFIG_NOTE = (
    "no --config: the model at its own default size (config.json records it), larger than "
    "the demo study's, which config.yaml shrinks for 2 CPU cores; pass --config config.yaml "
    "to train the study's size"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pilip.potential.recipes import recipe_settings
    from pilip.potential.train_config import add_train_options

    parser.add_argument("dataset", help="dataset table (Parquet) with split and energy columns")
    parser.add_argument(
        "--out",
        required=True,
        help="run folder: model.pt, last.pt, metrics.csv (a committee: members/<k>/ each)",
    )
    parser.add_argument("--config", help="config.yaml whose `training` section gives the settings")
    parser.add_argument("--variant", help="a name under training.variants in --config")
    parser.add_argument(
        "--unlabelled", help="configurations table (Parquet) fed to the weak losses only"
    )
    for settings in recipe_settings():
        add_train_options(parser, settings)
    add_run_options(parser)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Every training setting, the model size options and how the run folder is used (shared
    by ``pilip train`` and ``pilip distill``)."""
    from pilip.potential.train_config import add_train_options

    add_train_options(parser)
    for name, (kind, text) in MODEL_OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, help=text)
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument(
        "--restart-if-changed",
        action="store_true",
        help="start afresh when --out/last.pt was written with another configuration "
        "(default: refuse)",
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def given_options(args: argparse.Namespace, recipes: bool = True) -> dict:
    """The settings given as options (TrainConfig's, the recipes' unless ``recipes`` is
    False, model hyper-parameters)."""
    from pilip.potential.recipes import recipe_settings
    from pilip.potential.train_config import TrainConfig, option_values

    given = option_values(args, TrainConfig)
    for settings in recipe_settings() if recipes else []:
        given.update(option_values(args, settings))
    params = {k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k) is not None}
    if params:
        given["model_params"] = params
    if getattr(args, "unlabelled", None) is not None:
        given["unlabelled"] = args.unlabelled
    return given


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from pilip.errors import PilipError
    from pilip.potential.recipes import student_settings

    given = given_options(args)
    settings = resolve_settings(args, given)
    names = [f.name for f in dataclasses.fields(student_settings())]
    student = sorted(k for k in names if settings[2].get(k) is not None)
    if student:
        teacher = settings[2].get("teacher")
        raise PilipError(
            f"{args.config}: training.variants.{args.variant} is a distilled student "
            f"({', '.join(student)}{f': {teacher}' if teacher else ''}): train it with `pilip "
            "distill TEACHER POOL --variant ...` (the workflow's rule distill), not pilip train"
        )
    return train_run(args, args.dataset, given, settings)


def resolve_settings(args: argparse.Namespace, given: dict, defaults: dict | None = None):
    """(the validated --config or None, TrainConfig, the recipes' option values, unlabelled
    table or None): the settings ``given`` as options over ``--variant`` over ``defaults``
    over the ``--config``'s training section over the declared ones, checked before any data
    are read."""
    from pilip.potential.train_config import split_values, training_values

    study = None
    if args.config:
        from pilip.config import load_config

        study = load_config(args.config)
    values, unlabelled_path = training_values(study, args.variant, given, args.config or "")
    # ``defaults`` (a command's own, e.g. the student's losses) win over the config's
    # ``training`` section, not over what the variant or the options say
    chosen = set(given)
    if study is not None and args.variant:
        chosen |= set(study["training"]["variants"][args.variant])
    values.update({k: v for k, v in (defaults or {}).items() if k not in chosen})
    config, options = split_values(values, args.config or f"pilip {args.command}")
    config.validate()  # before reading any data (check_inputs adds the data's checks)
    return study, config, options, unlabelled_path


def train_run(
    args: argparse.Namespace,
    dataset: str,
    given: dict,
    settings: tuple,
    *,
    extra: list | None = None,
) -> int:
    """Train on ``dataset`` with ``settings`` (from :func:`resolve_settings` of the options
    ``given``); ``extra`` recipes join those the options select (``pilip distill`` adds its
    own). ``args``: ``out``, ``config``, ``threads``, ``no_resume``, ``restart_if_changed``,
    ``no_progress``."""
    from pathlib import Path

    import torch

    from pilip.errors import PilipError
    from pilip.potential import recipes
    from pilip.potential.data import load_dataset, load_unlabelled, training_references
    from pilip.potential.devices import resolve_device
    from pilip.potential.terms import FORCES
    from pilip.potential.train import TrainingInterrupted, check_inputs, train

    study, config, options, unlabelled_path = settings
    chosen = recipes.select(options)
    if extra:  # plain only when no recipe at all is chosen
        chosen = [r for r in chosen if r.name != "plain"] + extra
    resolve_device(config.device)
    if args.threads is not None:
        if args.threads < 1:
            raise PilipError(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PilipError(f"--out {out}: exists and is not a folder; choose a folder")
    data = load_dataset(
        dataset, forces=FORCES in config.losses, n_train=config.n_train, seed=config.seed
    )
    unlabelled = load_unlabelled(unlabelled_path) if unlabelled_path else None
    check_inputs(config, data["train"], unlabelled)
    elements = sorted(
        set().union(*(s.elements() for s in (*data.values(), unlabelled) if s is not None))
    )
    plan = recipes.RunPlan(
        config=config, data=data, dataset=Path(dataset), out_dir=out,
        unlabelled=unlabelled, unlabelled_path=Path(unlabelled_path) if unlabelled_path else None,
        study=study, config_path=args.config, elements=elements, given=given,
        meta={"dataset": str(dataset), "reference": training_references(dataset)},
    )  # fmt: skip
    for recipe in chosen:  # every check before any baseline calculation or training
        recipe.check(plan)

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "a", encoding="utf-8") as log_file:

        def log(message: str) -> None:
            print(f"pilip {args.command}: {message}", file=sys.stderr)
            print(message, file=log_file, flush=True)

        plan.log = log
        for recipe in chosen:
            recipe.prepare(plan)
        plan.meta["recipes"] = plan.records
        log(
            f"{dataset}: {len(plan.data['train'])} training, {len(plan.data['val'])} "
            "validation structures"
            + (f", {len(plan.unlabelled)} unlabelled" if plan.unlabelled else "")
            + f"; model {plan.config.model}, losses {','.join(plan.config.losses)}; "
            f"recipe {recipes.describe(plan.meta)}"
            + (
                f"; a committee of {plan.config.ensemble} (seeds {plan.config.seed} to "
                f"{plan.config.seed + plan.config.ensemble - 1}), the budget per member"
                if plan.config.ensemble > 1
                else ""
            )
        )
        if not args.config:
            log(NO_CONFIG_NOTE)
        try:
            result = train(
                plan.config, plan.data, out, unlabelled=plan.unlabelled,
                init_weights=plan.init_weights, meta=plan.meta, surface=plan.surface,
                resume=not args.no_resume, restart_if_changed=args.restart_if_changed,
                progress=False if args.no_progress else None, log=log,
            )  # fmt: skip
        except TrainingInterrupted as stop:
            log(f"interrupted by {stop}")
            return 128 + stop.signum
    if not result.members:  # a committee's result was logged, with its members'
        print(
            f"pilip {args.command}: best epoch {result.best_epoch}, validation energy RMSE "
            f"{1000 * result.best_val_energy_rmse:.2f} meV -> {out / 'model.pt'}",
            file=sys.stderr,
        )
    return 0
