"""The training loop: energies (and optionally forces) plus the weak losses PITC and PISC.

AdamW, reduce-on-plateau, an exponential moving average (EMA) of the weights, gradient
clipping, and early stopping and model selection on the VALIDATION ENERGY error only (an
energy-only user has no validation forces). The budget is epochs and/or minutes, whichever
ends first. Every epoch appends one row to ``metrics.csv``; ``last.pt`` holds everything to
resume (weights, optimizer, scheduler, EMA, random-number states), so an interrupted run
continues where its last checkpoint left it and ends with the same numbers as an
uninterrupted one (on the CPU). ``model.pt`` holds the EMA weights of the best epoch.

Determinism: the model is initialised from ``seed``; batch order and perturbations come from
CPU generators seeded from ``seed``, so they do not depend on the device, except when the step
is a CUDA graph (``static_shapes``, pilip.static_step): its perturbations come from the
device's default CUDA generator, seeded from ``seed`` too.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pilip.atomic_io import atomic_path
from pilip.checkpoint import read_checkpoint, save_checkpoint
from pilip.data import TRAIN, VAL, Structures, concat_batches
from pilip.devices import resolve_device
from pilip.errors import PilipError
from pilip.forces import total_energy
from pilip.losses import (
    ENERGY,
    FORCES,
    TOTAL,
    WEAK_TERMS,
    LossTerm,
    WeakLossOptions,
    check_terms,
    compute_losses,
)
from pilip.static_step import MAX_AUTO_ATOMS, StaticStep, batch_shape, pad_batch

METRICS_FILE = "metrics.csv"
BEST_FILE = "model.pt"
LAST_FILE = "last.pt"
CONFIG_FILE = "config.json"
LOSS_ALIASES = {"force": FORCES}
# Keys that may differ between an interrupted run and its resumption (the budget).
RESUMABLE_CHANGES = (
    "epochs", "minutes", "device", "progress", "checkpoint_interval_s", "static_shapes",
)  # fmt: skip
STATIC_SHAPES = ("auto", "always", "never")  # not on/off: YAML reads those as booleans


class TrainingDiverged(PilipError):
    """The loss became NaN or infinite; training stopped (the last good checkpoint is kept)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON-serialisable; stored in checkpoints)."""

    model: str = "painn"  # painn | schnet
    model_params: dict[str, Any] = field(default_factory=dict)  # hyper-parameter overrides
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
    # pad every batch to one shape (pilip.static_step); on CUDA the step is then captured once
    # as a CUDA graph and replayed. auto: on CUDA for molecules of up to 64 atoms; always: also
    # on a CPU (no graph there: the same padded step, eagerly); never
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
        weights = {
            ENERGY: self.w_energy,
            FORCES: self.w_forces,
            "pitc": self.w_pitc,
            "pisc": self.w_pisc,
        }
        terms = []
        for name in self.losses:
            if name not in weights:
                raise PilipError(
                    f"unknown loss {name!r} in --losses: use energy, forces, pitc, pisc"
                )
            terms.append(LossTerm(name, float(weights[name]), self.per_atom and name != FORCES))
        return terms

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
        if self.epochs is None and self.minutes is None:
            raise PilipError("no budget: give --epochs and/or --minutes")
        if self.epochs is not None and self.epochs < 1:
            raise PilipError(f"--epochs {self.epochs}: must be >= 1")
        if self.minutes is not None and not self.minutes > 0:
            raise PilipError(f"--minutes {self.minutes}: must be > 0")
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


# --- EMA of the weights ----------------------------------------------------------------------


class EMA:
    """Shadow copies of the floating-point parameters: s <- d s + (1 - d) p after each step.

    The decay ramps up as min(d, (1 + n) / (10 + n)) over the first steps, so the average is
    not dominated by the random initialisation on short runs.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        names, params = zip(*model.named_parameters(), strict=True)
        # one foreach kernel per dtype/device, not one per parameter (launch-bound on a GPU)
        torch._foreach_lerp_([self.shadow[n] for n in names], list(params), 1.0 - d)

    def state_dict_of(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with EMA weights in place of the parameters."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.update({k: v.clone() for k, v in self.shadow.items()})
        return state

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


class _swapped_weights:
    """Context manager: the model temporarily carries ``state`` (e.g. EMA) weights."""

    def __init__(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        self.model, self.state = model, state

    def __enter__(self) -> nn.Module:
        self.saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.state)
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.load_state_dict(self.saved)


# --- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def predict_energies(model: nn.Module, structures: Structures, batch_size: int) -> torch.Tensor:
    """Model energies (n_structures,) eV, in order, in float64."""
    out = [total_energy(model, b) for b in structures.batches(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def energy_errors(predicted: torch.Tensor, structures: Structures) -> dict[str, float]:
    """Energy RMSE and MAE in eV and in meV/atom (each structure's error / its atom count)."""
    error = predicted.double() - structures.energy.double()
    per_atom_mev = error / structures.n_atoms.double() * 1000.0
    return {
        "energy_rmse_eV": float(error.square().mean().sqrt()),
        "energy_mae_eV": float(error.abs().mean()),
        "energy_rmse_meV_per_atom": float(per_atom_mev.square().mean().sqrt()),
        "energy_mae_meV_per_atom": float(per_atom_mev.abs().mean()),
    }


# --- the loop --------------------------------------------------------------------------------


@dataclass
class TrainResult:
    best_epoch: int
    best_val_energy_rmse_eV: float
    epochs: int  # epochs completed
    stop_reason: str  # epochs | minutes | early_stopping
    wall_time_s: float  # training time over all sessions (excluding evaluation of the test set)
    out_dir: Path


def _build_model(config: TrainConfig, train: Structures) -> nn.Module:
    from pilip.models import build_model

    params = {"dtype": config.dtype, **config.model_params}
    model = build_model(config.model, **params)
    if hasattr(model, "energy_shift"):
        batch = torch.repeat_interleave(torch.arange(len(train)), train.n_atoms)
        model.energy_shift.fit(train.numbers, batch, train.energy)
    return model


def data_fingerprint(data: dict[str, Structures], unlabelled: Structures | None) -> str:
    """16 hex characters identifying the training, validation and unlabelled structures."""
    digest = hashlib.sha256()
    for s in (data[TRAIN], data[VAL], unlabelled):
        if s is None:
            digest.update(b"none")
            continue
        for t in (s.numbers, s.positions, s.offsets, s.energy, s.forces):
            digest.update(b"-" if t is None else t.detach().cpu().double().numpy().tobytes())
    return digest.hexdigest()[:16]


def _rng_states(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    return {name: g.get_state() for name, g in generators.items()}


class _MetricsLog:
    """metrics.csv, one row per epoch; header fixed at the first row."""

    def __init__(self, path: Path, columns: list[str], keep_epochs: int) -> None:
        self.path, self.columns = path, columns
        rows: list[dict[str, str]] = []
        if keep_epochs > 0 and path.is_file():
            with open(path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) <= keep_epochs]
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(
                {k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def train(
    config: TrainConfig,
    data: dict[str, Structures],
    out_dir: str | Path,
    *,
    unlabelled: Structures | None = None,
    resume: bool = True,
    restart_if_changed: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``data[TRAIN]``, select on ``data[VAL]`` energies; write
    ``out_dir``/{model.pt, last.pt, metrics.csv, config.json}.

    ``data`` comes from :func:`pilip.data.load_dataset` (float64, CPU). ``unlabelled``
    structures (no labels) feed the weak losses only. ``resume`` continues from
    ``out_dir/last.pt`` when it exists: the same config (the budget aside) and data are
    required, else PilipError, or with ``restart_if_changed`` a fresh start.
    ``progress`` None shows a bar only on a terminal. Raises :class:`TrainingDiverged` on a
    non-finite loss.
    """
    log = log or (lambda message: None)
    config.validate()
    if unlabelled is not None and not config.weak:
        raise PilipError(
            "--unlabelled feeds only the weak losses: add pitc and/or pisc to --losses"
        )
    train_set, val_set = data[TRAIN], data[VAL]
    if FORCES in config.losses and train_set.forces is None:
        raise PilipError("--losses includes forces but the training data were read without forces")
    if unlabelled is not None:
        extra = sorted(set(unlabelled.elements()) - set(train_set.elements()))
        if extra:
            raise PilipError(
                f"--unlabelled has element(s) {extra} absent from the training set; "
                "the model cannot place their energy"
            )
    device = resolve_device(config.device)
    dtype = getattr(torch, config.dtype)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    max_atoms = max(int(s.n_atoms.max()) for s in (train_set, unlabelled) if s is not None)
    static = config.static_shapes == "always" or (
        config.static_shapes == "auto" and device.type == "cuda" and max_atoms <= MAX_AUTO_ATOMS
    )
    capture = static and device.type == "cuda"
    # padded batches are assembled on the CPU and copied into the step's static inputs
    batch_device = torch.device("cpu") if static else device

    torch.manual_seed(config.seed)
    model = _build_model(config, train_set).to(device)
    train_dev = train_set.to(batch_device, dtype)
    val_dev = val_set.to(device, dtype)
    unl_dev = unlabelled.to(batch_device, dtype) if unlabelled is not None else None
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience,
        min_lr=config.min_lr,
    )  # fmt: skip
    ema = EMA(model, config.ema_decay)
    # separate streams, so that adding unlabelled structures leaves the labelled batch order
    shuffle_gen = torch.Generator().manual_seed(config.seed * 1_000_003 + 1)
    unlabelled_gen = torch.Generator().manual_seed(config.seed * 1_000_003 + 3)
    generators = {"shuffle": shuffle_gen, "unlabelled": unlabelled_gen}
    if capture:  # a CUDA graph draws its random numbers from the default CUDA generator
        index = torch.cuda.current_device() if device.index is None else device.index
        perturb_gen = torch.cuda.default_generators[index]
        generators["perturb_cuda"] = perturb_gen
    else:
        perturb_gen = torch.Generator()
        generators["perturb"] = perturb_gen
    perturb_gen.manual_seed(config.seed * 1_000_003 + 2)
    terms, options = config.terms(), config.weak_options()
    step_fn, shape = None, None
    if static:
        n_unl = config.unlabelled_batch_size if unlabelled is not None else 0
        shape = batch_shape(max_atoms, config.batch_size, len(train_set), n_unl)
        step_fn = StaticStep(model, terms, options, perturb_gen, capture, log)
        log(
            f"static shapes: {shape.n_slots} structures, {shape.n_atoms} atoms per step "
            f"({'CUDA graph' if capture else 'no graph'})"
        )

    epoch, best_epoch, best_rmse, bad_epochs, elapsed = 0, 0, math.inf, 0, 0.0
    best_state: dict[str, torch.Tensor] | None = None
    unl_order, unl_pos = None, 0
    last_path = out_dir / LAST_FILE
    fingerprint = data_fingerprint(data, unlabelled)
    if resume and last_path.is_file():
        state = read_checkpoint(last_path, "cpu")
        try:
            check_resumable(state["meta"], config, fingerprint, last_path)
        except PilipError as exc:
            if not restart_if_changed:
                raise
            log(f"starting afresh: {exc}")
            state = None
    else:
        state = None
    if state is not None:
        ts = state["train_state"]
        model.load_state_dict(state["model"]["state_dict"])
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        ema.load_state_dict(ts["ema"])
        for name, generator in generators.items():
            if name in ts["rng"]:  # a CUDA graph run resumed without one draws afresh
                generator.set_state(ts["rng"][name])
        epoch, best_epoch, bad_epochs = ts["epoch"], ts["best_epoch"], ts["bad_epochs"]
        best_rmse, elapsed = ts["best_rmse"], ts["elapsed_s"]
        best_state = ts["best_state"]
        if ts.get("unl_order") is not None:
            unl_order, unl_pos = ts["unl_order"], int(ts["unl_pos"])
        log(f"resumed from {last_path} after epoch {epoch} (best epoch {best_epoch})")

    with atomic_path(out_dir / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    loss_names = [t.name for t in terms if t.weight > 0] + [TOTAL]
    columns = ["epoch", "wall_time_s", "lr"] + [f"train_{n}" for n in loss_names]
    columns += [
        "val_energy_rmse_eV", "val_energy_mae_eV", "val_energy_rmse_meV_per_atom",
        "val_energy_mae_meV_per_atom", "best",
    ]  # fmt: skip
    metrics_log = _MetricsLog(out_dir / METRICS_FILE, columns, keep_epochs=epoch)
    meta_base = {
        "config": config.to_dict(),
        "elements": train_set.elements(),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "n_unlabelled": 0 if unlabelled is None else len(unlabelled),
        "data_fingerprint": fingerprint,
    }

    def save_last() -> None:
        train_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict(),
            "rng": _rng_states(generators),
            "epoch": epoch,
            "best_epoch": best_epoch,
            "best_rmse": best_rmse,
            "bad_epochs": bad_epochs,
            "elapsed_s": elapsed,
            "best_state": best_state,
            "unl_order": unl_order,
            "unl_pos": unl_pos,
        }
        save_checkpoint(
            last_path, model=model, model_name=config.model, meta=meta_base,
            train_state=train_state,
        )  # fmt: skip

    def save_best() -> None:
        meta = {**meta_base, "best_epoch": best_epoch, "val_energy_rmse_eV": best_rmse}
        save_checkpoint(
            out_dir / BEST_FILE, model=model, model_name=config.model, meta=meta,
            state_dict=best_state,
        )  # fmt: skip

    def next_unlabelled() -> dict[str, torch.Tensor]:
        nonlocal unl_order, unl_pos
        n_unl = len(unl_dev)
        take = []
        need = config.unlabelled_batch_size
        while need > 0:
            if unl_order is None or unl_pos >= n_unl:
                unl_order, unl_pos = torch.randperm(n_unl, generator=unlabelled_gen), 0
            chunk = unl_order[unl_pos : unl_pos + need]
            take.append(chunk)
            unl_pos += len(chunk)
            need -= len(chunk)
        return unl_dev.batch(torch.cat(take).to(batch_device))

    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=config.epochs, initial=epoch, disable=not show, unit="epoch", leave=False)
    stop_reason = ""
    last_saved = time.monotonic()
    session_start = time.monotonic() - elapsed
    model.train()
    try:
        while True:
            if config.epochs is not None and epoch >= config.epochs:
                stop_reason = "epochs"
                break
            if config.minutes is not None and elapsed >= 60.0 * config.minutes:
                stop_reason = "minutes"
                break
            if bad_epochs >= config.patience:
                stop_reason = "early_stopping"
                break
            sums = {n: torch.zeros((), device=device, dtype=torch.float64) for n in loss_names}
            n_steps = 0
            for batch in train_dev.batches(config.batch_size, shuffle=True, generator=shuffle_gen):
                if unl_dev is not None:
                    batch = concat_batches(batch, next_unlabelled())
                if step_fn is not None:  # losses and backward on the padded batch
                    losses = step_fn(pad_batch(batch, shape))
                else:
                    losses = compute_losses(model, batch, terms, perturb_gen, options)
                total = losses[TOTAL]
                if not capture and not torch.isfinite(total):  # a host sync: not in graphs
                    bad = [n for n, v in losses.items() if n != TOTAL and not torch.isfinite(v)]
                    value = float(total.detach())
                    raise TrainingDiverged(
                        f"loss {', '.join(bad) or TOTAL} is {value} at epoch {epoch + 1} "
                        f"step {n_steps + 1}; stopped (last good checkpoint kept in {out_dir}); "
                        "lower --lr or --eps"
                    )
                if step_fn is None:
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
                optimizer.step()
                ema.update(model)
                for n in loss_names:
                    sums[n] += losses[n].detach().double()
                n_steps += 1
            if capture and not torch.isfinite(sums[TOTAL]):  # checked once per epoch
                raise TrainingDiverged(
                    f"loss {TOTAL} is {float(sums[TOTAL])} in epoch {epoch + 1}; stopped (last "
                    f"good checkpoint kept in {out_dir}); lower --lr or --eps"
                )
            epoch += 1

            ema_state = ema.state_dict_of(model)
            with _swapped_weights(model, ema_state):
                model.eval()
                val = energy_errors(
                    predict_energies(model, val_dev, config.val_batch_size), val_dev
                )
                model.train()
            rmse = val["energy_rmse_eV"]
            if not math.isfinite(rmse):
                raise TrainingDiverged(
                    f"validation energy RMSE is {rmse} at epoch {epoch}; stopped; lower --lr"
                )
            scheduler.step(rmse)
            improved = rmse < best_rmse
            if improved:
                best_rmse, best_epoch, bad_epochs = rmse, epoch, 0
                best_state = {k: v.detach().cpu() for k, v in ema_state.items()}
            else:
                bad_epochs += 1
            elapsed = time.monotonic() - session_start
            row = {
                "epoch": epoch,
                "wall_time_s": elapsed,
                "lr": optimizer.param_groups[0]["lr"],
                **{f"train_{n}": float(sums[n]) / max(n_steps, 1) for n in loss_names},
                **{f"val_{k}": v for k, v in val.items()},
                "best": int(improved),
            }
            metrics_log.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row[f'train_{TOTAL}']:.3g}", val_rmse_meV=f"{1000 * rmse:.1f}")
            if time.monotonic() - last_saved >= config.checkpoint_interval_s:
                save_last()
                save_best()
                last_saved = time.monotonic()
    finally:
        bar.close()
    save_last()
    save_best()
    log(
        f"stopped ({stop_reason}) after epoch {epoch}: best epoch {best_epoch}, "
        f"validation energy RMSE {1000 * best_rmse:.2f} meV, {elapsed:.1f} s"
    )
    return TrainResult(best_epoch, best_rmse, epoch, stop_reason, elapsed, out_dir)


def check_resumable(
    meta: dict[str, Any], config: TrainConfig, fingerprint: str, path: Path
) -> None:
    """PilipError unless the checkpoint meta ``meta`` was written by ``config`` (budget aside)
    on the data with ``fingerprint``."""
    if meta.get("data_fingerprint") != fingerprint:
        raise PilipError(
            f"{path} was trained on other data (dataset, --n-train or --unlabelled); "
            "use another --out or delete it to start afresh"
        )
    saved, current = meta["config"], config.to_dict()
    changed = sorted(
        k for k in set(saved) | set(current)
        if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    )  # fmt: skip
    if changed:
        raise PilipError(
            f"{path} was written with a different setting of {', '.join(changed)}; "
            "use another --out or delete it to start afresh"
        )
