"""Everything a training run needs to continue exactly where it stopped, saved and restored as one.

A :class:`TrainState` holds the loop's counters, the best weights so far, the metrics history
(one row per finished epoch: ``metrics.csv`` is rewritten from it, so a resumed or re-run
run keeps its whole learning curve) and the position inside an interrupted epoch, and it
saves and restores its *components* (optimizer, scheduler, EMA, random streams, the
unlabelled stream: anything with ``state_dict``/``load_state_dict``) through one symmetric
pair, :meth:`TrainState.state_dict` and :meth:`TrainState.load_state_dict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from pilip.errors import PilipError

# Bumped when the saved layout changes; a last.pt of another layout cannot be resumed.
STATE_VERSION = 3
_COUNTERS = (
    "epoch", "best_epoch", "best_score", "best_rmse", "bad_epochs", "elapsed_s", "cpu_s",
    "step_in_epoch",
)  # fmt: skip


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class RandomStreams:
    """The run's random-number generators, one stream per purpose, seeded from ``seed``.

    ``shuffle`` orders the labelled batches, ``unlabelled`` the unlabelled ones (separate, so
    adding unlabelled structures leaves the labelled order), ``perturb`` draws the weak-loss
    perturbations: a CPU generator (device-independent numbers) unless ``cuda_device`` is
    given, whose default generator a CUDA graph must draw from.
    """

    def __init__(self, seed: int, cuda_device: torch.device | None = None) -> None:
        self.shuffle = torch.Generator().manual_seed(seed * 1_000_003 + 1)
        self.unlabelled = torch.Generator().manual_seed(seed * 1_000_003 + 3)
        if cuda_device is not None:
            index = torch.cuda.current_device() if cuda_device.index is None else cuda_device.index
            self.perturb = torch.cuda.default_generators[index]
            self._perturb_name = "perturb_cuda"
        else:
            self.perturb = torch.Generator()
            self._perturb_name = "perturb"
        self.perturb.manual_seed(seed * 1_000_003 + 2)

    def _named(self) -> dict[str, torch.Generator]:
        return {
            "shuffle": self.shuffle,
            "unlabelled": self.unlabelled,
            self._perturb_name: self.perturb,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: g.get_state() for name, g in self._named().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, generator in self._named().items():
            if name in state:  # a CUDA-graph run resumed without a graph draws afresh
                generator.set_state(state[name])


@dataclass
class TrainState:
    """Counters, best weights, history and the components that together are the run's state."""

    components: dict[str, Stateful] = field(default_factory=dict, repr=False)
    epoch: int = 0  # finished epochs
    best_epoch: int = 0  # the epoch whose EMA weights are ``best_weights`` (0: none yet)
    best_score: float = math.inf  # its selection score (pilip.potential.train.selection_score)
    best_rmse: float = math.inf  # eV, its validation energy RMSE
    bad_epochs: int = 0  # epochs since the last improvement
    elapsed_s: float = 0.0  # training wall time over all sessions
    cpu_s: float = 0.0  # CPU time of this process spent training, over all sessions
    best_weights: dict[str, torch.Tensor] | None = None  # EMA state dict of the best epoch (CPU)
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv rows
    # inside an interrupted epoch: its batch order, the steps done and their loss sums
    epoch_order: torch.Tensor | None = None
    step_in_epoch: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)

    def record_validation(
        self, score: float, rmse: float, weights: dict[str, torch.Tensor]
    ) -> bool:
        """Count a finished epoch with selection ``score`` (lower is better), validation energy
        RMSE ``rmse`` (eV) and EMA ``weights``; True when it is the best so far (its weights
        are then kept)."""
        if score < self.best_score:
            self.best_score, self.best_rmse = score, rmse
            self.best_epoch, self.bad_epochs = self.epoch, 0
            self.best_weights = {k: v.detach().cpu() for k, v in weights.items()}
            return True
        self.bad_epochs += 1
        return False

    def finish_epoch(self) -> None:
        self.epoch += 1
        self.epoch_order, self.step_in_epoch, self.epoch_sums = None, 0, {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            **{name: getattr(self, name) for name in _COUNTERS},
            "best_weights": self.best_weights,
            "history": self.history,
            "epoch_order": self.epoch_order,
            "epoch_sums": self.epoch_sums,
            "components": {name: c.state_dict() for name, c in self.components.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise PilipError(
                "its training state was written by another pilip version and cannot be resumed"
            )
        for name in _COUNTERS:
            setattr(self, name, state.get(name, getattr(self, name)))
        self.best_weights = state["best_weights"]
        self.history = list(state["history"])
        self.epoch_order = state["epoch_order"]
        self.epoch_sums = dict(state["epoch_sums"])
        for name, component in self.components.items():
            component.load_state_dict(state["components"][name])
