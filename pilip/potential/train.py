"""The training loop: energies (and optionally forces) plus the weak losses PITC and PISC.

AdamW, reduce-on-plateau, an exponential moving average (EMA) of the weights, gradient
clipping, and early stopping and model selection on the validation energy RMSE (an energy-only
user has no validation forces) or, when forces are trained and every validation structure has
them (a ceiling, a pretraining run, a distilled student), on the validation loss of both,
``w_energy * MSE(E) + w_forces * MSE(F)`` (:func:`selection_score`): a run that learns forces is
not kept at an epoch whose forces are worse because a few validation energies were better.
The budget is epochs, wall-clock minutes and/or CPU
minutes, whichever ends first. The settings: :mod:`pilip.potential.train_config`; the run
folder, resuming and signals: :mod:`pilip.potential.run_folder`; what a recipe (Delta,
fine-tuning, ...) changes arrives as data: the targets, initial weights and a loss surface
(:mod:`pilip.potential.recipes`). The loop has no recipe of its own.

Determinism: the model is initialised from ``seed``; batch order and perturbations come from
CPU generators seeded from ``seed``, so they do not depend on the device, except when the step
is a CUDA graph (``static_shapes``, pilip.potential.static_step): its perturbations come from the
device's default CUDA generator, seeded from ``seed`` too. An interrupted run continues where
its ``last.pt`` left it and ends with the same numbers as an uninterrupted one (on the CPU).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pilip.errors import PilipError
from pilip.potential.data import TRAIN, VAL, Structures, UnlabelledStream, concat_batches
from pilip.potential.devices import resolve_device
from pilip.potential.ema import EMA, swapped_weights
from pilip.potential.evaluate import predict
from pilip.potential.metrics import energy_metrics
from pilip.potential.run_folder import (
    RunFolder,
    StopSignals,
    TrainingInterrupted,
    check_layout,
    data_fingerprint,
)
from pilip.potential.static_step import batch_shape
from pilip.potential.steps import TrainingDiverged, make_step, plan_static
from pilip.potential.terms import FORCES, TOTAL
from pilip.potential.train_config import TrainConfig
from pilip.potential.train_state import RandomStreams, TrainState

__all__ = ["LossSurface", "TrainConfig", "TrainResult", "TrainingDiverged",
           "TrainingInterrupted", "train"]  # fmt: skip


class LossSurface(Protocol):
    """What the losses and the validation see when it is not the network itself (Delta with
    the weak losses: baseline + network on the reference labels)."""

    def wrap(self, model: nn.Module, dtype: torch.dtype) -> nn.Module: ...

    def labels(self, structures: Structures) -> Structures: ...


@dataclass
class TrainResult:
    best_epoch: int
    best_val_energy_rmse: float  # eV, the validation energy RMSE of the saved model
    epochs: int  # epochs completed
    stop_reason: str  # epochs | minutes | cpu_minutes | early_stopping
    wall_time_s: float  # training time over all sessions (excluding evaluation of the test set)
    out_dir: Path
    # a committee's: its members' results (then best_epoch, epochs and stop_reason are member
    # 0's, best_val_energy_rmse the committee mean's and wall_time_s the sum over members)
    members: list[TrainResult] = field(default_factory=list)


def train(
    config: TrainConfig,
    data: dict[str, Structures],
    out_dir: str | Path,
    *,
    unlabelled: Structures | None = None,
    init_weights: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]] | None = None,
    meta: dict[str, Any] | None = None,
    surface: LossSurface | None = None,
    resume: bool = True,
    restart_if_changed: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``data[TRAIN]``, select on ``data[VAL]`` energies; write
    ``out_dir``/{model.pt, last.pt, metrics.csv, config.json}.

    ``data`` (from :func:`pilip.potential.data.load_dataset`, float64, CPU) holds the targets
    the per-element energy shifts are fitted to. ``unlabelled`` structures feed the weak losses
    only. ``init_weights`` (a state dict of the same architecture, or a committee's list of
    them: member k of this run starts from entry k mod their number) replace the random
    initialisation. ``config.ensemble`` > 1 trains a committee of that many models, seeds
    ``seed`` + k, each a run folder ``out_dir/members/k`` (pilip.potential.committee_training).
    ``meta`` (JSON-like) goes into both checkpoints. ``surface``: the losses
    and the validation see ``surface.wrap(model)`` against ``surface.labels(data)``; the
    checkpoints hold the network. ``resume`` continues from ``out_dir/last.pt`` (see
    :mod:`pilip.potential.run_folder`). ``progress`` None shows a bar only on a terminal.
    Raises :class:`TrainingDiverged` on a non-finite loss and :class:`TrainingInterrupted`
    after SIGINT/SIGTERM (``last.pt`` saved).
    """
    log = log or (lambda message: None)
    check_layout(Path(out_dir), config.ensemble > 1, resume, restart_if_changed, log)
    if config.ensemble > 1:
        from pilip.potential.committee_training import train_committee

        return train_committee(
            config, data, Path(out_dir), unlabelled=unlabelled, init_weights=init_weights,
            meta=meta, surface=surface, resume=resume, restart_if_changed=restart_if_changed,
            progress=progress, log=log,
        )  # fmt: skip
    if isinstance(init_weights, list):  # a committee's members: a single model takes the first
        init_weights = init_weights[0]
    train_set, val_set = data[TRAIN], data[VAL]
    check_inputs(config, train_set, unlabelled)
    with_forces = selects_on_forces(config, val_set)
    if FORCES in config.losses and config.w_forces > 0 and val_set.forces is None:
        log("model selection on validation energies only: the validation structures have no "
            "forces (label them with forces to select on both)")  # fmt: skip
    device, dtype = resolve_device(config.device), getattr(torch, config.dtype)
    max_atoms = max(int(s.n_atoms.max()) for s in (train_set, unlabelled) if s is not None)
    static, capture = plan_static(config.static_shapes, device, max_atoms)
    if surface is not None:  # a surface may run code outside torch: never inside a graph
        static = capture = False
    streams = RandomStreams(config.seed, device if capture else None)
    torch.manual_seed(config.seed)
    model = build_model(config, train_set, init_weights).to(device)
    loss_model = model if surface is None else surface.wrap(model, dtype)
    if surface is not None:
        train_set, val_set = surface.labels(train_set), surface.labels(val_set)
    config = dataclasses.replace(config, model_params=resolved_params(model))  # recorded
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
    )
    ema = EMA(model, config.ema_decay)
    n_unl = config.unlabelled_batch_size if unlabelled is not None else 0
    shape = batch_shape(max_atoms, config.batch_size, len(train_set), n_unl) if static else None
    step = make_step(loss_model, config.terms(), config.weak_options(), streams.perturb, device,
                     shape=shape, capture=capture, log=log)  # fmt: skip
    train_dev, val_dev = train_set.to(step.batch_device, dtype), val_set.to(device, dtype)
    components = {"optimizer": optimizer, "scheduler": scheduler, "ema": ema, "rng": streams}
    stream = None
    if unlabelled is not None:
        stream = UnlabelledStream(unlabelled.to(step.batch_device, dtype), n_unl,
                                  streams.unlabelled, step.batch_device)  # fmt: skip
        components["unlabelled"] = stream
    state = TrainState(components)
    fingerprint = data_fingerprint(data, unlabelled, init_weights)
    run = RunFolder(Path(out_dir), config, model, with_forces, {
        **(meta or {}), "elements": train_set.elements(), "n_train": len(train_set),
        "n_val": len(val_set), "n_unlabelled": 0 if unlabelled is None else len(unlabelled),
        "data_fingerprint": fingerprint,
    })  # fmt: skip
    if resume:
        run.restore(state, model, fingerprint, restart_if_changed, log)
    run.start(state)

    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=config.epochs, initial=state.epoch, disable=not show, unit="epoch",
               leave=False)  # fmt: skip
    clock = Clock(state)
    model.train()
    with StopSignals() as stop, bar:
        while not (stop_reason := budget_spent(config, state)):
            if state.epoch_order is None:  # a new epoch (else: the rest of an interrupted one)
                state.epoch_order = torch.randperm(len(train_dev), generator=streams.shuffle)
            sums = {n: torch.tensor(state.epoch_sums.get(n, 0.0), device=device,
                                    dtype=torch.float64) for n in run.loss_names}  # fmt: skip
            order, size = state.epoch_order.to(step.batch_device), config.batch_size
            for start in range(state.step_in_epoch * size, len(train_dev), size):
                batch = train_dev.batch(order[start : start + size])
                if stream is not None:
                    batch = concat_batches(batch, stream.next_batch())
                losses = step(batch)
                step.check_finite(losses, f"at epoch {state.epoch + 1} step {start // size + 1}")
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
                optimizer.step()
                ema.update(model)
                for name in run.loss_names:
                    sums[name] += losses[name].double()
                state.step_in_epoch += 1
                if stop.signum is not None:  # save the step reached, then stop
                    state.epoch_sums = {n: float(v) for n, v in sums.items()}
                    clock.record()
                    run.save(state)
                    raise TrainingInterrupted(stop.signum, state.epoch, state.step_in_epoch,
                                              run.out_dir)  # fmt: skip
            train_losses = epoch_losses(sums, state)
            state.finish_epoch()
            ema_weights = ema.weights_of(model)
            with swapped_weights(model, ema_weights):
                val = validation_errors(loss_model, val_dev, val_set, config.val_batch_size,
                                        config if with_forces else None)  # fmt: skip
            score = selection_score(val)
            if not math.isfinite(score):
                raise TrainingDiverged(f"validation energy RMSE is {val['energy_rmse']} at "
                                       f"epoch {state.epoch}; stopped; lower --lr")  # fmt: skip
            scheduler.step(score)
            improved = state.record_validation(score, val["energy_rmse"], ema_weights)
            clock.record()
            run.append(state, {
                "epoch": state.epoch, "wall_time_s": state.elapsed_s, "cpu_time_s": state.cpu_s,
                "lr": optimizer.param_groups[0]["lr"], **train_losses,
                **{f"val_{k}": val[k] for k in run.val_keys}, "best": int(improved),
            })  # fmt: skip
            bar.update(1)
            bar.set_postfix(loss=f"{train_losses[f'train_{TOTAL}']:.3g}",
                            val_rmse_meV=f"{1000 * val['energy_rmse']:.1f}")  # fmt: skip
            if stop.signum is not None or clock.since_save() >= config.checkpoint_interval_s:
                run.save(state)
                clock.saved()
            if stop.signum is not None:
                raise TrainingInterrupted(stop.signum, state.epoch, 0, run.out_dir)
    run.save(state)
    log(f"stopped ({stop_reason}) after epoch {state.epoch}: best epoch {state.best_epoch}, "
        f"validation energy RMSE {1000 * state.best_rmse:.2f} meV, "
        f"{state.elapsed_s:.1f} s")  # fmt: skip
    return TrainResult(state.best_epoch, state.best_rmse, state.epoch, stop_reason,
                       state.elapsed_s, run.out_dir)  # fmt: skip


# --- the loop's helpers ----------------------------------------------------------------------


class Clock:
    """Training wall and CPU time over all sessions of a run (kept in the state)."""

    def __init__(self, state: TrainState) -> None:
        self.state = state
        self.wall_start = time.monotonic() - state.elapsed_s
        self.cpu_start = time.process_time() - state.cpu_s
        self.last_save = time.monotonic()

    def record(self) -> None:
        self.state.elapsed_s = time.monotonic() - self.wall_start
        self.state.cpu_s = time.process_time() - self.cpu_start

    def since_save(self) -> float:
        return time.monotonic() - self.last_save

    def saved(self) -> None:
        self.last_save = time.monotonic()


def epoch_losses(sums: dict[str, torch.Tensor], state: TrainState) -> dict[str, float]:
    """``train_<term>``: the epoch's mean of each loss term; TrainingDiverged if not finite (a
    CUDA-graph step is checked here, not per step)."""
    n_steps = max(state.step_in_epoch, 1)
    losses = {f"train_{n}": float(v) / n_steps for n, v in sums.items()}
    if not math.isfinite(losses[f"train_{TOTAL}"]):
        raise TrainingDiverged(
            f"loss {TOTAL} is {losses[f'train_{TOTAL}']} in epoch {state.epoch + 1}; stopped "
            "(last good checkpoint kept in the run folder); lower --lr or --eps"
        )
    return losses


def check_inputs(config: TrainConfig, train_set: Structures, unlabelled: Structures | None) -> None:
    """One-line PilipError for settings and data that cannot train together."""
    config.validate()
    if unlabelled is not None and not config.weak:
        raise PilipError(
            "--unlabelled feeds only the weak losses: add pitc and/or pisc to --losses"
        )
    if FORCES in config.losses and train_set.forces is None:
        raise PilipError("--losses includes forces but the training data were read without forces")
    if unlabelled is not None:
        extra = sorted(set(unlabelled.elements()) - set(train_set.elements()))
        if extra:
            raise PilipError(
                f"--unlabelled has element(s) {extra} absent from the training set; "
                "the model cannot place their energy"
            )


def build_model(
    config: TrainConfig, train: Structures, init_weights: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """The model of ``config`` (random, or ``init_weights``), its per-element energy shifts
    fitted to the training energies by least squares (with ``init_weights`` only the shifts:
    the output scale stays the initial model's)."""
    from pilip.potential.models import build_model as build
    from pilip.potential.models import data_hparams

    params = data_hparams(config.model, {"dtype": config.dtype, **config.model_params}, train)
    model = build(config.model, **params)
    if init_weights is not None:
        try:
            model.load_state_dict(init_weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise PilipError(
                f"the initial weights do not fit --model {config.model}: {first}"
            ) from None
    if hasattr(model, "energy_shift"):
        scale = model.energy_shift.scale.clone()
        batch = torch.repeat_interleave(torch.arange(len(train)), train.n_atoms)
        model.energy_shift.fit(train.numbers, batch, train.energy)
        if init_weights is not None:  # the network's output scale is part of what it learnt
            model.energy_shift.scale.copy_(scale)
    return model


def resolved_params(model: nn.Module) -> dict[str, Any]:
    """Every hyper-parameter the model was built with, but its dtype (``TrainConfig.dtype``)."""
    return {k: v for k, v in model.hparams().items() if k != "dtype"}


def budget_spent(config: TrainConfig, state: TrainState) -> str:
    """Why training stops now (epochs | minutes | cpu_minutes | early_stopping), or "" to go on."""
    if config.epochs is not None and state.epoch >= config.epochs:
        return "epochs"
    if config.minutes is not None and state.elapsed_s >= 60.0 * config.minutes:
        return "minutes"
    if config.cpu_minutes is not None and state.cpu_s >= 60.0 * config.cpu_minutes:
        return "cpu_minutes"
    if state.bad_epochs >= config.patience:
        return "early_stopping"
    return ""


def selects_on_forces(config: TrainConfig, val_set: Structures) -> bool:
    """Whether model selection looks at validation forces: forces are trained (a weight > 0)
    and every validation structure has them."""
    return FORCES in config.losses and config.w_forces > 0 and val_set.forces is not None


def selection_score(val: dict[str, Any]) -> float:
    """What model selection, the learning-rate schedule and early stopping minimise: the
    validation energy RMSE (eV), or, where ``val`` has forces (:func:`validation_errors` with
    ``forces``), the validation loss ``w_energy * MSE(E) + w_forces * MSE(F)`` (eV^2 and
    (eV/A)^2; energies per atom with ``per_atom``), the supervised part of the training loss."""
    if "loss" in val:
        return float(val["loss"])
    return float(val["energy_rmse"])


def validation_errors(
    model: nn.Module,
    structures: Structures,
    labelled: Structures,
    batch_size: int,
    config: TrainConfig | None = None,
) -> dict[str, Any]:
    """Energy errors (pilip.potential.metrics keys) of ``model`` on ``structures`` (on the
    model's device), against the float64 labels of ``labelled`` (the same structures); with
    ``config``, also the force errors (``force_rmse``, eV/A; ``labelled`` has forces) and
    ``loss`` (:func:`selection_score`, with ``config``'s weights)."""
    device = next(model.parameters()).device
    forces = config is not None
    predicted, predicted_forces = predict(model, structures, device, batch_size, forces=forces)
    energy, n_atoms = labelled.energy.numpy(), labelled.n_atoms.numpy()
    errors = energy_metrics(predicted, energy, n_atoms)
    if config is not None:
        energy_mse = np.mean(((predicted - energy) / (n_atoms if config.per_atom else 1.0)) ** 2)
        force_mse = float(np.mean((predicted_forces - labelled.forces.numpy()) ** 2))
        errors["force_rmse"] = math.sqrt(force_mse)
        errors["loss"] = float(config.w_energy * energy_mse + config.w_forces * force_mse)
    return errors
