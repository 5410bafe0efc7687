"""The training loop: energies (and optionally forces) plus the weak losses PITC and PISC.

AdamW, reduce-on-plateau, an exponential moving average (EMA) of the weights, gradient
clipping, and early stopping and model selection on the VALIDATION ENERGY error only (an
energy-only user has no validation forces). The budget is epochs and/or minutes, whichever
ends first. Every epoch adds one row to ``metrics.csv`` (the columns ``val_*`` carry the
names of ``metrics.json``, pilip.potential.metrics); ``last.pt`` holds everything to resume
(pilip.potential.train_state: weights, optimizer, scheduler, EMA, random streams, the metrics
history),
so an interrupted run continues where its last checkpoint left it and ends with the same
numbers as an uninterrupted one (on the CPU), and a finished run run again rewrites the same
``model.pt`` and ``metrics.csv``. SIGINT and SIGTERM (Ctrl-C; SLURM before a kill) save
``last.pt`` at the current step, then stop (:class:`TrainingInterrupted`). ``model.pt`` holds
the EMA weights of the best epoch.

Multi-fidelity training (pilip.potential.multifidelity): Delta-learning passes data whose labels are
reference - baseline, and with the weak losses also ``total_surface`` (the losses then see
baseline + model); fine-tuning passes ``init_weights`` (the per-element energy shifts are then
refitted on the new labels, the optimizer starts fresh).

Determinism: the model is initialised from ``seed``; batch order and perturbations come from
CPU generators seeded from ``seed``, so they do not depend on the device, except when the step
is a CUDA graph (``static_shapes``, pilip.potential.static_step): its perturbations come from the
device's default CUDA generator, seeded from ``seed`` too.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pilip.atomic_io import append_text, atomic_path
from pilip.errors import PilipError
from pilip.potential.checkpoint import read_checkpoint, save_checkpoint
from pilip.potential.data import TRAIN, VAL, Structures, UnlabelledStream, concat_batches
from pilip.potential.devices import resolve_device
from pilip.potential.ema import EMA, swapped_weights
from pilip.potential.evaluate import predict
from pilip.potential.losses import (
    ENERGY,
    FORCES,
    TERM_NAMES,
    TOTAL,
    WEAK_TERMS,
    LossTerm,
    WeakLossOptions,
    check_terms,
    make_terms,
)
from pilip.potential.metrics import energy_metrics
from pilip.potential.static_step import batch_shape
from pilip.potential.steps import TrainingDiverged, make_step, plan_static
from pilip.potential.train_state import STATE_VERSION, RandomStreams, TrainState

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "train"]

METRICS_FILE = "metrics.csv"
BEST_FILE = "model.pt"
LAST_FILE = "last.pt"
CONFIG_FILE = "config.json"
LOSS_ALIASES = {"force": FORCES}
# Keys that may differ between an interrupted run and its resumption (the budget).
RESUMABLE_CHANGES = (
    "epochs", "minutes", "cpu_minutes", "device", "progress", "checkpoint_interval_s",
    "static_shapes",
)  # fmt: skip
STATIC_SHAPES = ("auto", "always", "never")  # not on/off: YAML reads those as booleans
# validation columns of metrics.csv: "val_" + the energy keys of metrics.json
VAL_KEYS = ("energy_rmse", "energy_mae", "energy_rmse_mev_per_atom", "energy_mae_mev_per_atom")


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON-serialisable; stored in checkpoints)."""

    model: str = "painn"  # painn | schnet
    # model hyper-parameters (pilip.potential.models); unset ones take the model's defaults,
    # and train() records them all (config.json, checkpoints)
    model_params: dict[str, Any] = field(default_factory=dict)
    losses: list[str] = field(default_factory=lambda: [ENERGY])  # energy, forces, pitc, pisc
    w_energy: float = 1.0
    w_forces: float = 1.0
    w_pitc: float = 1.0
    w_pisc: float = 0.01
    per_atom: bool = False  # energy and weak residuals divided by the atom count
    eps: float = 0.01  # Angstrom, half-width of the weak-loss perturbations
    k: float = 0.5  # second-order factor: 0 first order, 0.5 trapezoid
    center: bool = True  # remove each perturbation's mean over the structure
    weak_mode: str = "auto"  # auto (fused on CUDA, three calls on a CPU) | fused | three_calls
    n_train: int | None = None  # subsample of the training split (None: all of it)
    seed: int = 0
    epochs: int | None = 1000  # budget in epochs; None: minutes only
    minutes: float | None = None  # budget in wall-clock minutes; None: epochs only
    # budget in CPU minutes of this process (benchmarks: other users of the machine cannot
    # shorten it); None: no CPU budget
    cpu_minutes: float | None = None
    batch_size: int = 16
    unlabelled_batch_size: int = 16  # unlabelled structures added to every step (--unlabelled)
    val_batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.99
    clip_grad_norm: float = 10.0
    lr_factor: float = 0.5  # reduce-on-plateau factor
    lr_patience: int = 25  # epochs without a better validation energy before the lr drops
    min_lr: float = 1e-6
    patience: int = 100  # early stopping: epochs without a better validation energy
    dtype: str = "float32"  # float32 | float64 (model and data)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_interval_s: float = 30.0  # seconds between last.pt writes (also at the end)
    # pad every batch to one shape (pilip.potential.static_step); on CUDA the step is then
    # captured once as a CUDA graph and replayed. always: pad (and capture on CUDA; on a CPU the
    # same padded step runs eagerly); auto: eager until the graph step has passed its CUDA tests
    # on a GPU (pilip.potential.static_step.GRAPHS_VERIFIED), then as always for molecules up to
    # 64 atoms; never
    static_shapes: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.losses, str):
            self.losses = [s.strip() for s in self.losses.split(",") if s.strip()]
        self.losses = [LOSS_ALIASES.get(n.lower(), n.lower()) for n in self.losses]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "training config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PilipError(
                f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def terms(self) -> list[LossTerm]:
        """The loss terms of ``losses`` with their ``w_*`` weights."""
        weights = {name: getattr(self, f"w_{name}") for name in TERM_NAMES}
        return make_terms(self.losses, weights, self.per_atom)

    def weak_options(self) -> WeakLossOptions:
        return WeakLossOptions(eps=self.eps, k=self.k, center=self.center, mode=self.weak_mode)

    def validate(self) -> None:
        """One-line PilipError for any inconsistent setting (before any expensive work)."""
        terms = self.terms()
        check_terms(terms, self.weak_options())
        if ENERGY not in self.losses:
            raise PilipError("--losses must include energy: it is the only labelled signal")
        if self.model not in ("painn", "schnet"):
            raise PilipError(f"--model {self.model!r}: use painn or schnet")
        if self.epochs is None and self.minutes is None and self.cpu_minutes is None:
            raise PilipError("no budget: give --epochs, --minutes and/or --cpu-minutes")
        if self.epochs is not None and self.epochs < 1:
            raise PilipError(f"--epochs {self.epochs}: must be >= 1")
        if self.minutes is not None and not self.minutes > 0:
            raise PilipError(f"--minutes {self.minutes}: must be > 0")
        if self.cpu_minutes is not None and not self.cpu_minutes > 0:
            raise PilipError(f"--cpu-minutes {self.cpu_minutes}: must be > 0")
        for name in ("batch_size", "unlabelled_batch_size", "val_batch_size"):
            if getattr(self, name) < 1:
                raise PilipError(f"{name} = {getattr(self, name)}: must be >= 1")
        if not self.lr > 0:
            raise PilipError(f"--lr {self.lr}: must be > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise PilipError(f"ema_decay = {self.ema_decay}: must lie in [0, 1)")
        if self.dtype not in ("float32", "float64"):
            raise PilipError(f"dtype {self.dtype!r}: use float32 or float64")
        if self.static_shapes not in STATIC_SHAPES:
            raise PilipError(
                f"static_shapes {self.static_shapes!r}: use {', '.join(STATIC_SHAPES)}"
            )

    @property
    def weak(self) -> bool:
        return any(name in WEAK_TERMS for name in self.losses)


class TrainingInterrupted(Exception):  # noqa: N818 - like KeyboardInterrupt
    """SIGINT or SIGTERM arrived; ``last.pt`` was saved at the step reached."""

    def __init__(self, signum: int, epoch: int, step: int, out_dir: Path) -> None:
        self.signum, self.epoch, self.step, self.out_dir = signum, epoch, step, out_dir
        name = signal.Signals(signum).name
        where = f"after epoch {epoch}" + (f" and {step} step(s) of the next" if step else "")
        super().__init__(f"{name}: saved {out_dir / LAST_FILE} {where}; run again to resume")


@dataclass
class TrainResult:
    best_epoch: int
    best_val_energy_rmse: float  # eV, the validation energy RMSE of the saved model
    epochs: int  # epochs completed
    stop_reason: str  # epochs | minutes | cpu_minutes | early_stopping
    wall_time_s: float  # training time over all sessions (excluding evaluation of the test set)
    out_dir: Path


# --- the loop --------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    data: dict[str, Structures],
    out_dir: str | Path,
    *,
    unlabelled: Structures | None = None,
    init_weights: dict[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
    total_surface: Any = None,
    resume: bool = True,
    restart_if_changed: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``data[TRAIN]``, select on ``data[VAL]`` energies; write
    ``out_dir``/{model.pt, last.pt, metrics.csv, config.json}.

    ``data`` comes from :func:`pilip.potential.data.load_dataset` (float64, CPU). ``unlabelled``
    structures (no labels) feed the weak losses only. ``init_weights`` (a model state dict of
    the same architecture) start the model instead of the random initialisation (fine-tuning).
    ``meta`` (JSON-like) is stored in both checkpoints, e.g. the training data's reference.
    ``total_surface`` (Delta-learning with the weak losses,
    ``pilip.potential.multifidelity.DeltaSetup``):
    ``data`` holds reference - baseline (the shifts are fitted to it), but the step and the
    validation see baseline + model on the reference labels, so PITC and PISC act on the total
    surface (the baseline computed at the perturbed geometries); the checkpoints hold the model.
    ``resume`` continues from ``out_dir/last.pt`` when it exists: the same config (the budget
    aside) and data are required, else PilipError, or with ``restart_if_changed`` a fresh start.
    ``progress`` None shows a bar only on a terminal. Raises :class:`TrainingDiverged` on a
    non-finite loss and :class:`TrainingInterrupted` after SIGINT/SIGTERM (``last.pt`` saved).
    """
    log = log or (lambda message: None)
    train_set, val_set = data[TRAIN], data[VAL]
    check_inputs(config, train_set, unlabelled)
    device, dtype = resolve_device(config.device), getattr(torch, config.dtype)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    max_atoms = max(int(s.n_atoms.max()) for s in (train_set, unlabelled) if s is not None)
    static, capture = plan_static(config.static_shapes, device, max_atoms)
    if total_surface is not None:  # the baseline runs on the CPU, outside any graph
        static = capture = False
    streams = RandomStreams(config.seed, device if capture else None)
    torch.manual_seed(config.seed)
    model = build_model(config, train_set, init_weights).to(device)
    loss_model = model  # what the losses and the validation see
    if total_surface is not None:  # the weak losses act on the total surface baseline + model
        loss_model = total_surface.model(model, dtype)
        train_set, val_set = total_surface.restore(train_set), total_surface.restore(val_set)
    config = dataclasses.replace(config, model_params=resolved_params(model))  # recorded
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
    )
    ema = EMA(model, config.ema_decay)
    n_unl = config.unlabelled_batch_size if unlabelled is not None else 0
    shape = batch_shape(max_atoms, config.batch_size, len(train_set), n_unl) if static else None
    step = make_step(loss_model, config.terms(), config.weak_options(), streams.perturb, device,
                     shape=shape, capture=capture, log=log)  # fmt: skip
    train_dev = train_set.to(step.batch_device, dtype)
    val_dev = val_set.to(device, dtype)
    components = {"optimizer": optimizer, "scheduler": scheduler, "ema": ema, "rng": streams}
    stream = None
    if unlabelled is not None:
        stream = UnlabelledStream(
            unlabelled.to(step.batch_device, dtype), n_unl, streams.unlabelled, step.batch_device
        )
        components["unlabelled"] = stream
    state = TrainState(components)
    fingerprint = data_fingerprint(data, unlabelled, init_weights)
    run = RunFolder(out_dir, config, model, {
        **(meta or {}), "elements": train_set.elements(), "n_train": len(train_set),
        "n_val": len(val_set), "n_unlabelled": 0 if unlabelled is None else len(unlabelled),
        "data_fingerprint": fingerprint,
    })  # fmt: skip
    if resume:
        run.restore(state, model, fingerprint, restart_if_changed, log)
    run.start(state)

    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(
        total=config.epochs, initial=state.epoch, disable=not show, unit="epoch", leave=False
    )
    last_saved = time.monotonic()
    session_start = time.monotonic() - state.elapsed_s
    cpu_start = time.process_time() - state.cpu_s
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
                if stop.signum is not None:
                    state.epoch_sums = {n: float(v) for n, v in sums.items()}
                    state.elapsed_s = time.monotonic() - session_start
                    state.cpu_s = time.process_time() - cpu_start
                    run.save(state)
                    raise TrainingInterrupted(
                        stop.signum, state.epoch, state.step_in_epoch, out_dir
                    )
            n_steps = max(state.step_in_epoch, 1)
            train_losses = {f"train_{n}": float(v) / n_steps for n, v in sums.items()}
            if not math.isfinite(train_losses[f"train_{TOTAL}"]):  # a graph step checks here
                raise TrainingDiverged(
                    f"loss {TOTAL} is {train_losses[f'train_{TOTAL}']} in epoch "
                    f"{state.epoch + 1}; stopped (last good checkpoint kept in {out_dir}); "
                    "lower --lr or --eps"
                )
            state.finish_epoch()

            ema_weights = ema.weights_of(model)
            with swapped_weights(model, ema_weights):
                val = validation_errors(loss_model, val_dev, val_set, config.val_batch_size)
            if not math.isfinite(val["energy_rmse"]):
                raise TrainingDiverged(
                    f"validation energy RMSE is {val['energy_rmse']} at epoch {state.epoch}; "
                    "stopped; lower --lr"
                )
            scheduler.step(val["energy_rmse"])
            improved = state.record_validation(val["energy_rmse"], ema_weights)
            state.elapsed_s = time.monotonic() - session_start
            state.cpu_s = time.process_time() - cpu_start
            row = {
                "epoch": state.epoch,
                "wall_time_s": state.elapsed_s,
                "lr": optimizer.param_groups[0]["lr"],
                **train_losses,
                **{f"val_{k}": val[k] for k in VAL_KEYS},
                "best": int(improved),
            }
            run.append(state, row)
            bar.update(1)
            bar.set_postfix(loss=f"{train_losses[f'train_{TOTAL}']:.3g}",
                            val_rmse_meV=f"{1000 * val['energy_rmse']:.1f}")  # fmt: skip
            if (
                stop.signum is not None
                or time.monotonic() - last_saved >= config.checkpoint_interval_s
            ):
                run.save(state)
                last_saved = time.monotonic()
            if stop.signum is not None:
                raise TrainingInterrupted(stop.signum, state.epoch, 0, out_dir)
    run.save(state)
    log(
        f"stopped ({stop_reason}) after epoch {state.epoch}: best epoch {state.best_epoch}, "
        f"validation energy RMSE {1000 * state.best_rmse:.2f} meV, {state.elapsed_s:.1f} s"
    )
    return TrainResult(
        state.best_epoch, state.best_rmse, state.epoch, stop_reason, state.elapsed_s, out_dir
    )


# --- the loop's helpers ----------------------------------------------------------------------


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

    model = build(config.model, **{"dtype": config.dtype, **config.model_params})
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


def validation_errors(
    model: nn.Module, structures: Structures, labelled: Structures, batch_size: int
) -> dict[str, Any]:
    """Energy errors (pilip.potential.metrics keys) of ``model`` on ``structures`` (on the model's
    device),
    against the float64 labels of ``labelled`` (the same structures)."""
    device = next(model.parameters()).device
    predicted, _ = predict(model, structures, device, batch_size)
    return energy_metrics(predicted, labelled.energy.numpy(), labelled.n_atoms.numpy())


def data_fingerprint(
    data: dict[str, Structures],
    unlabelled: Structures | None,
    init_weights: dict[str, torch.Tensor] | None = None,
) -> str:
    """16 hex characters identifying the training, validation and unlabelled structures and
    their labels, and the initial weights when given."""
    digest = hashlib.sha256()
    for s in (data[TRAIN], data[VAL], unlabelled):
        if s is None:
            digest.update(b"none")
            continue
        for t in (s.numbers, s.positions, s.offsets, s.energy, s.forces):
            digest.update(b"-" if t is None else t.detach().cpu().double().numpy().tobytes())
    for name, tensor in sorted((init_weights or {}).items()):
        digest.update(name.encode() + tensor.detach().cpu().double().numpy().tobytes())
    return digest.hexdigest()[:16]


class StopSignals:
    """While active, SIGINT and SIGTERM only set ``signum`` (the loop then saves and stops);
    the previous handlers come back at the first signal, so a second one acts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signals reach it only
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()


class RunFolder:
    """The run's files: config.json, metrics.csv (from the state's history), last.pt, model.pt."""

    def __init__(
        self, out_dir: Path, config: TrainConfig, model: nn.Module, meta: dict[str, Any]
    ) -> None:
        self.out_dir, self.config, self.model = out_dir, config, model
        self.meta = {"config": config.to_dict(), **meta}
        self.loss_names = [t.name for t in config.terms() if t.weight > 0] + [TOTAL]
        self.columns = ["epoch", "wall_time_s", "lr", *(f"train_{n}" for n in self.loss_names)]
        self.columns += [f"val_{k}" for k in VAL_KEYS] + ["best"]

    def restore(
        self,
        state: TrainState,
        model: nn.Module,
        fingerprint: str,
        restart_if_changed: bool,
        log: Callable[[str], None],
    ) -> None:
        """Load ``last.pt`` into ``model`` and ``state`` when it continues this run."""
        path = self.out_dir / LAST_FILE
        if not path.is_file():
            return
        saved = read_checkpoint(path, "cpu")
        problem = resume_problem(saved, self.config, fingerprint)
        if problem and not restart_if_changed:
            raise PilipError(
                f"{path} {problem}; to start afresh there pass --restart-if-changed (or "
                "--no-resume), or choose another --out"
            )
        if problem:
            log(f"starting afresh: {path} {problem}")
            return
        model.load_state_dict(saved["model"]["state_dict"])
        state.load_state_dict(saved["train_state"])
        log(f"resumed from {path} after epoch {state.epoch} (best epoch {state.best_epoch})")

    def start(self, state: TrainState) -> None:
        """Write config.json and metrics.csv (the history so far)."""
        with atomic_path(self.out_dir / CONFIG_FILE) as tmp:
            tmp.write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n")
        with atomic_path(self.out_dir / METRICS_FILE) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(_formatted(row) for row in state.history)

    def append(self, state: TrainState, row: dict[str, Any]) -> None:
        state.history.append(row)
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=self.columns).writerow(_formatted(row))
        # the whole row or nothing (a full disk is one line naming metrics.csv)
        append_text(self.out_dir / METRICS_FILE, line.getvalue())

    def save(self, state: TrainState) -> None:
        """last.pt (the weights and the whole state), then model.pt (the best EMA weights)."""
        save_checkpoint(self.out_dir / LAST_FILE, model=self.model, model_name=self.config.model,
                        meta=self.meta, train_state=state.state_dict())  # fmt: skip
        best = {**self.meta, "best_epoch": state.best_epoch, "val_energy_rmse": state.best_rmse}
        save_checkpoint(self.out_dir / BEST_FILE, model=self.model, model_name=self.config.model,
                        meta=best, state_dict=state.best_weights)  # fmt: skip


def _formatted(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in row.items()}


def resume_problem(saved: dict[str, Any], config: TrainConfig, fingerprint: str) -> str:
    """Why the checkpoint dict ``saved`` cannot continue a run of ``config`` on the data with
    ``fingerprint`` (the budget may change), or "" when it can."""
    meta = saved.get("meta", {})
    if (saved.get("train_state") or {}).get("version") != STATE_VERSION:
        return "was written by another pilip version and cannot be resumed"
    if meta.get("data_fingerprint") != fingerprint:
        return "was trained on other data (dataset, --n-train, --unlabelled or initial weights)"
    previous, current = meta["config"], config.to_dict()
    changed = sorted(
        k for k in set(previous) | set(current)
        if k not in RESUMABLE_CHANGES and previous.get(k) != current.get(k)
    )  # fmt: skip
    return f"was written with a different setting of {', '.join(changed)}" if changed else ""
