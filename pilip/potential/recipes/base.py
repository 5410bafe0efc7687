"""The contract of a training recipe, and the plan of a run that recipes fill in.

A recipe decides what a run trains on and what a checkpoint of it means: Delta-learning
subtracts a baseline from the targets and adds it back at inference, fine-tuning starts from
a checkpoint's weights. ``pilip train`` builds a :class:`RunPlan` (the settings, the data, the
run folder), lets every selected recipe :meth:`~Recipe.check` it (all checks before any
expensive work), then :meth:`~Recipe.prepare` it (targets, initial weights, loss surface), and
hands the plan to the loop (``pilip.potential.train.train``), which knows no recipe. The
record each recipe leaves in ``plan.records`` goes into the checkpoint (``meta["recipes"]``, in
order), and ``pilip.potential.checkpoint.load_model`` gives it back to the recipe's
:meth:`~Recipe.inference_model`, so every user of the checkpoint gets what the recipe means.

A recipe module imports no torch at import time (the config schema, which every command and the
Snakefile load, reads its settings): import it inside the methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import Tensor, nn

    from pilip.potential.data import Structures
    from pilip.potential.train import LossSurface
    from pilip.potential.train_config import TrainConfig


@dataclass
class RunPlan:
    """One training run as the recipes see it. ``data`` maps a split to its structures (the
    targets the network's per-element shifts are fitted to; eV, eV/A)."""

    config: TrainConfig
    data: dict[str, Structures]
    dataset: Path  # the dataset table the structures were read from
    out_dir: Path
    unlabelled: Structures | None = None
    unlabelled_path: Path | None = None
    study: dict[str, Any] | None = None  # the validated --config (references, ...)
    config_path: str | None = None
    elements: list[int] = field(default_factory=list)  # atomic numbers of every structure
    given: dict[str, Any] = field(default_factory=dict)  # settings given as options
    # instead of the random initialisation: a state dict, or a committee's list of them
    # (member k of the run starts from entry k mod their number)
    init_weights: dict[str, Tensor] | list[dict[str, Tensor]] | None = None
    surface: LossSurface | None = None  # what the losses see, when not the network itself
    records: list[dict[str, Any]] = field(default_factory=list)  # the recipes' records
    meta: dict[str, Any] = field(default_factory=dict)  # more checkpoint meta
    log: Callable[[str], None] = lambda message: None

    def record_of(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r["name"] == name), None)


class Recipe:
    """One way to train, selected by its settings (``settings``: a dataclass declared with
    ``pilip.potential.train_config.setting``; each field is a ``pilip train`` option and, unless
    ``config=False``, a key of ``training.variants`` entries)."""

    name: ClassVar[str]
    settings: ClassVar[type | None] = None
    # True when a checkpoint's network alone is not the potential (inference_model wraps it)
    wraps_inference: ClassVar[bool] = False

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options  # the values of this recipe's settings

    @classmethod
    def selected(cls, options: dict[str, Any]) -> bool:
        """Whether a run with these option values uses this recipe (default: one of its
        settings is given)."""
        if cls.settings is None:
            return False
        return any(options.get(f.name) is not None for f in dataclasses.fields(cls.settings))

    def check(self, plan: RunPlan) -> None:
        """One-line PilipError for anything wrong, before any expensive work. May add this
        recipe's record to ``plan.records`` early (others check against it)."""

    def prepare(self, plan: RunPlan) -> None:
        """Change the plan: targets (``plan.data``), ``init_weights``, ``surface``, ``meta``;
        leave this recipe's record in ``plan.records``."""

    @classmethod
    def inference_model(
        cls, model: nn.Module, record: dict[str, Any], source: str, **inputs: Any
    ) -> nn.Module:
        """The potential a checkpoint of this recipe stands for, given its network. ``inputs``:
        what a command passes to ``load_model`` for the recipes that need more than the
        checkpoint (``baseline_labels`` and ``structures`` for a tabled Delta baseline)."""
        return model

    @classmethod
    def describe(cls, record: dict[str, Any]) -> str:
        """A few words for reports (``Delta over GFN2-xTB (tblite 0.8.0)``)."""
        return cls.name

    @classmethod
    def init_problem(
        cls, init: dict[str, Any] | None, run: dict[str, Any] | None, path: str
    ) -> str:
        """Why a checkpoint whose record of this recipe is ``init`` cannot start a run whose
        record is ``run`` (either None where absent), or "" (recipes that wrap inference)."""
        return ""


def state_dict_in(weights: dict[str, Tensor], dtype: str) -> dict[str, Tensor]:
    """``weights`` with every floating-point tensor in ``dtype`` (``float32`` | ``float64``)."""
    import torch

    return {
        key: value.to(getattr(torch, dtype)) if value.is_floating_point() else value
        for key, value in weights.items()
    }
