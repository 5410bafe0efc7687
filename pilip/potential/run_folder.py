"""The run folder and its resume rules.

A run folder holds ``config.json`` (the settings, model hyper-parameters resolved),
``metrics.csv`` (one row per epoch, rewritten from the state's history on every start),
``last.pt`` (everything to resume: weights, optimizer, scheduler, EMA, random streams, the
metrics history) and ``model.pt`` (the EMA weights of the best epoch); a committee's
(``--ensemble N``) holds one such run folder per member in ``members/<k>/`` and the
committee's model.pt, metrics.csv and config.json (pilip.potential.committee_training). A
``last.pt`` continues a run only when it was written by the same settings (the budget and
placement aside: ``RESUMABLE_CHANGES``) on the same data (:func:`data_fingerprint`); anything
else is refused, or with ``restart_if_changed`` started afresh. SIGINT and SIGTERM (Ctrl-C;
SLURM before a kill) only set a flag while training runs (:class:`StopSignals`); the loop saves
``last.pt`` at the step reached and raises :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pilip.atomic_io import append_text, atomic_path
from pilip.errors import PilipError
from pilip.potential.checkpoint import read_checkpoint, save_checkpoint
from pilip.potential.data import TRAIN, VAL, Structures
from pilip.potential.terms import TOTAL
from pilip.potential.train_config import RESUMABLE_CHANGES, TrainConfig
from pilip.potential.train_state import STATE_VERSION, TrainState

METRICS_FILE = "metrics.csv"
BEST_FILE = "model.pt"
LAST_FILE = "last.pt"
CONFIG_FILE = "config.json"
MEMBERS_DIR = "members"  # a committee's members' run folders: members/0, members/1, ...
# validation columns of metrics.csv: "val_" + the energy keys of metrics.json
VAL_KEYS = ("energy_rmse", "energy_mae", "energy_rmse_mev_per_atom", "energy_mae_mev_per_atom")
VAL_FORCE_KEYS = ("force_rmse", "loss")  # where the validation structures have forces


class TrainingInterrupted(Exception):  # noqa: N818 - like KeyboardInterrupt
    """SIGINT or SIGTERM arrived; ``last.pt`` was saved at the step reached."""

    def __init__(self, signum: int, epoch: int, step: int, out_dir: Path) -> None:
        self.signum, self.epoch, self.step, self.out_dir = signum, epoch, step, out_dir
        name = signal.Signals(signum).name
        where = f"after epoch {epoch}" + (f" and {step} step(s) of the next" if step else "")
        super().__init__(f"{name}: saved {out_dir / LAST_FILE} {where}; run again to resume")


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


def data_fingerprint(
    data: dict[str, Structures],
    unlabelled: Structures | None,
    init_weights: dict[str, torch.Tensor] | None = None,
) -> str:
    """16 hex characters identifying the training, validation and unlabelled structures, their
    labels and label weights, and the initial weights when given."""
    digest = hashlib.sha256()
    for s in (data[TRAIN], data[VAL], unlabelled):
        if s is None:
            digest.update(b"none")
            continue
        for t in (s.numbers, s.positions, s.offsets, s.energy, s.forces):
            digest.update(b"-" if t is None else t.detach().cpu().double().numpy().tobytes())
        for t in (s.energy_weight, s.force_weight):  # only where given: older runs resume
            if t is not None:
                digest.update(b"w" + t.detach().cpu().double().numpy().tobytes())
    for name, tensor in sorted((init_weights or {}).items()):
        digest.update(name.encode() + tensor.detach().cpu().double().numpy().tobytes())
    return digest.hexdigest()[:16]


class RunFolder:
    """The run's files: config.json, metrics.csv (from the state's history), last.pt, model.pt."""

    def __init__(
        self,
        out_dir: Path,
        config: TrainConfig,
        model: nn.Module,
        val_forces: bool,
        meta: dict[str, Any],
    ) -> None:
        """``val_forces``: the validation has forces (metrics.csv's val_force_rmse, val_loss;
        model selection on the loss, pilip.potential.train.selection_score)."""
        self.out_dir, self.config, self.model = out_dir, config, model
        self.meta = {"config": config.to_dict(), **meta,
                     "selected_on": "val_loss" if val_forces else "val_energy_rmse"}  # fmt: skip
        self.loss_names = [t.name for t in config.terms() if t.weight > 0] + [TOTAL]
        self.columns = ["epoch", "wall_time_s", "cpu_time_s", "lr",
                        *(f"train_{n}" for n in self.loss_names)]  # fmt: skip
        self.val_keys = VAL_KEYS + (VAL_FORCE_KEYS if val_forces else ())
        self.columns += [f"val_{k}" for k in self.val_keys] + ["best"]

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
    defaults = TrainConfig().to_dict()  # a setting newer than the checkpoint had its default
    changed = sorted(
        k for k in set(previous) | set(current)
        if k not in RESUMABLE_CHANGES and previous.get(k, defaults.get(k)) != current.get(k)
    )  # fmt: skip
    return f"was written with a different setting of {', '.join(changed)}" if changed else ""


def layout_problem(out_dir: Path, committee: bool) -> str:
    """Why ``out_dir`` cannot continue a committee run (``committee``) or a single-model run:
    it holds only the other kind's resume point (``last.pt`` or ``members/``), or ""."""
    single, members = (out_dir / LAST_FILE).is_file(), (out_dir / MEMBERS_DIR).is_dir()
    if committee and single and not members:
        return f"{out_dir} holds a single-model run ({LAST_FILE}), not a committee (--ensemble)"
    if not committee and members and not single:
        return f"{out_dir} holds a committee run ({MEMBERS_DIR}/), not a single model"
    return ""


def check_layout(
    out_dir: Path,
    committee: bool,
    resume: bool,
    restart_if_changed: bool,
    log: Callable[[str], None],
) -> None:
    """Refuse (or, with ``restart_if_changed``, log and go on) a run folder of the other kind."""
    problem = layout_problem(out_dir, committee) if resume else ""
    if problem and not restart_if_changed:
        raise PilipError(
            f"--out {problem}; to start afresh there pass --restart-if-changed (or "
            "--no-resume), or choose another --out"
        )
    if problem:
        log(f"starting afresh: {problem}")
