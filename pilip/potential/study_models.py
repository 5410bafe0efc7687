"""The architecture every training run of a study trains, checked when the config is loaded.

A study's runs are its ``training.variants`` and, with the cheap level on, the pretraining run
``models/pretrain`` (``training`` with ``cheap_level.pretrain``'s overrides: always
``training.model``). Each run's model and hyper-parameters follow
``pilip.potential.train_config.training_values``: ``model_params`` merge within one
architecture, and a variant that sets another ``model`` (``delta_mace: {model: mace}`` in a
PaiNN study) takes that model's defaults and its own ``model_params`` only.

Checked before any job (``pilip.config.validate_config``, so by every command and the
Snakefile), without importing torch or mace-torch:

- every ``model_params`` key is a hyper-parameter of its run's model;
- a variant that fine-tunes from the workflow's pretraining run (``init:
  models/pretrain/model.pt``) asks for the architecture that run trains: fine-tuning keeps
  the checkpoint's architecture, so a MACE variant cannot start from a PaiNN pretraining run
  (set ``training.model: mace`` to pretrain MACE: then the pretraining run and every variant
  without a model of its own are MACE).

:func:`models_not_installed` is the environment's check (mace-torch present for a MACE run),
made by the Snakefile before the first job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pilip.errors import PilipError

PRETRAIN_RUN = "pretrain"
PRETRAIN_MODEL = "models/pretrain/model.pt"  # the workflow's pretraining run (rule pretrain)


def run_architectures(config: Mapping[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """run -> (model name, model_params as merged) of every variant of a default-filled
    config, and of the pretraining run when the cheap level is on."""
    from pilip.potential.train_config import training_values

    variants = (config.get("training") or {}).get("variants") or {}
    runs = {}
    for name in variants:
        values, _ = training_values(config, name, {})
        runs[name] = (values["model"], values["model_params"])
    cheap = config.get("cheap_level") or {}
    if cheap.get("enabled"):
        values, _ = training_values(config, None, dict(cheap.get("pretrain") or {}))
        runs[PRETRAIN_RUN] = (values["model"], values["model_params"])
    return runs


def _where(config: Mapping[str, Any], run: str, key: str) -> str:
    """The config key a run's setting comes from: the variant's own, else training's."""
    if run == PRETRAIN_RUN:
        return f"training.{key}"
    variant = config["training"]["variants"][run] or {}
    return f"training.variants.{run}.{key}" if key in variant else f"training.{key}"


def check_study_models(config: Mapping[str, Any]) -> None:
    """One-line PilipError naming the key and the fix for a run whose ``model_params`` its
    model does not have, or a fine-tune variant whose architecture is not its pretraining
    run's (see the module docstring). ``config``: validated and default-filled."""
    from pilip.potential.models import MODELS, hyperparameter_names

    runs = run_architectures(config)
    for run, (model, params) in runs.items():
        if model not in MODELS:
            continue  # the schema refused it already
        valid = hyperparameter_names(model)
        unknown = sorted(key for key in params if key not in valid)
        if unknown:
            where = _where(config, run, "model_params")
            raise PilipError(
                f"{where}: {model} (run {run}) has no hyper-parameter {', '.join(unknown)} "
                f"(its hyper-parameters: {', '.join(valid)}); remove "
                f"{'it' if len(unknown) == 1 else 'them'}"
            )
    if PRETRAIN_RUN not in runs:
        return
    pre_model, pre_params = runs[PRETRAIN_RUN]
    for run in config["training"]["variants"]:
        variant = config["training"]["variants"][run] or {}
        if variant.get("init") != PRETRAIN_MODEL:
            continue
        model, params = runs[run]
        if model != pre_model:
            raise PilipError(
                f"{_where(config, run, 'model')}: {model}, but variant {run} fine-tunes from "
                f"{PRETRAIN_MODEL}, the pretraining run of training.model ({pre_model}), and "
                f"fine-tuning keeps the checkpoint's architecture; set training.model: {model} "
                f"to pretrain {model} (variants without a model of their own follow it), or "
                f"drop model from variant {run}"
            )
        different = sorted(
            key for key in set(params) | set(pre_params) if params.get(key) != pre_params.get(key)
        )
        if different:
            raise PilipError(
                f"{_where(config, run, 'model_params')}: {', '.join(different)} not as in "
                f"the pretraining run that variant {run} fine-tunes from ({PRETRAIN_MODEL}: "
                f"training.model_params), and fine-tuning keeps the checkpoint's architecture; "
                f"set them in training.model_params, or drop them from variant {run}"
            )


def models_not_installed(config: Mapping[str, Any]) -> str | None:
    """Why a run of the study cannot build its model here (an extra not installed, e.g.
    mace-torch for ``model: mace``), naming the runs and the pip command; None when every
    model can be built. Imports nothing."""
    from pilip.potential.models import missing_extra

    missing: dict[str, list[str]] = {}
    for run, (model, _) in run_architectures(config).items():
        problem = missing_extra(model)
        if problem:
            missing.setdefault(problem, []).append(run)
    if not missing:
        return None
    problem, runs = next(iter(missing.items()))
    return f"training run(s) {', '.join(runs)}: {problem}"
