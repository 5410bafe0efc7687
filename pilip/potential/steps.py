"""One training step interface for the eager and the padded (CUDA-graph) step.

A step takes a batch, computes the losses and leaves the parameter gradients in ``p.grad``;
the loop then clips, steps the optimizer and updates the EMA, whatever the step's kind:

    losses = step(batch)               # dict of 0-dim tensors, "total" among them
    step.check_finite(losses, where)   # TrainingDiverged, where the step can afford a host sync

``batch_device`` says where the loop should assemble batches (the padded step pads on the
CPU and copies into its static inputs). :func:`make_step` picks the kind from
``static_shapes`` (see :data:`pilip.potential.static_step.GRAPHS_VERIFIED` for why ``auto`` runs
eagerly
for now).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from pilip.errors import PilipError
from pilip.potential.losses import TOTAL, LossTerm, WeakLossOptions, compute_losses
from pilip.potential.static_step import (
    GRAPHS_VERIFIED,
    MAX_AUTO_ATOMS,
    StaticShape,
    StaticStep,
    pad_batch,
)

CPU = torch.device("cpu")


class TrainingDiverged(PilipError):
    """The loss became NaN or infinite; training stopped (the last good checkpoint is kept)."""


class Step(Protocol):
    batch_device: torch.device

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def check_finite(self, losses: dict[str, Tensor], where: str) -> None: ...


def raise_if_not_finite(losses: dict[str, Tensor], where: str) -> None:
    """TrainingDiverged naming the non-finite terms (a host sync)."""
    total = losses[TOTAL]
    if not torch.isfinite(total):
        bad = [n for n, v in losses.items() if n != TOTAL and not torch.isfinite(v)]
        raise TrainingDiverged(
            f"loss {', '.join(bad) or TOTAL} is {float(total)} {where}; stopped (the last "
            "good checkpoint is kept); lower --lr or --eps"
        )


class EagerStep:
    """The plain step: losses of the batch as it comes, backward, on the model's device."""

    def __init__(
        self,
        model: nn.Module,
        terms: list[LossTerm],
        options: WeakLossOptions,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        self.model, self.terms, self.options, self.generator = model, terms, options, generator
        self.batch_device = device

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        for p in self.model.parameters():
            p.grad = None
        losses = compute_losses(self.model, batch, self.terms, self.generator, self.options)
        losses[TOTAL].backward()
        return {name: value.detach() for name, value in losses.items()}

    def check_finite(self, losses: dict[str, Tensor], where: str) -> None:
        raise_if_not_finite(losses, where)


class PaddedStep:
    """Batches padded to one shape (``pilip.potential.static_step``), replayed as a CUDA graph when
    ``capture``; assembled on the CPU."""

    batch_device = CPU

    def __init__(self, static: StaticStep, shape: StaticShape) -> None:
        self.static, self.shape = static, shape

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.static(pad_batch(batch, self.shape))

    def check_finite(self, losses: dict[str, Tensor], where: str) -> None:
        if not self.static.capture:  # a replayed graph must not wait for the host: per epoch
            raise_if_not_finite(losses, where)


def plan_static(static_shapes: str, device: torch.device, max_atoms: int) -> tuple[bool, bool]:
    """(pad batches, capture a CUDA graph) for the ``static_shapes`` setting.

    ``always`` pads (and captures on CUDA); ``auto`` does both on CUDA for molecules up to
    ``MAX_AUTO_ATOMS`` atoms only once ``GRAPHS_VERIFIED``, else runs eagerly; ``never`` never.
    """
    cuda = device.type == "cuda"
    if static_shapes == "always":
        return True, cuda
    auto = static_shapes == "auto" and GRAPHS_VERIFIED and cuda and max_atoms <= MAX_AUTO_ATOMS
    return auto, auto


def make_step(
    model: nn.Module,
    terms: list[LossTerm],
    options: WeakLossOptions,
    generator: torch.Generator,
    device: torch.device,
    *,
    shape: StaticShape | None,
    capture: bool,
    log: Callable[[str], None],
) -> Step:
    """The eager step, or with a ``shape`` the padded one (a CUDA graph when ``capture``)."""
    if shape is None:
        return EagerStep(model, terms, options, generator, device)
    log(
        f"static shapes: {shape.n_slots} structures, {shape.n_atoms} atoms per step "
        f"({'CUDA graph' if capture else 'no graph'})"
    )
    return PaddedStep(StaticStep(model, terms, options, generator, capture, log), shape)
