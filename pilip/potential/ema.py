"""Exponential moving average (EMA) of a model's weights: the weights pilip validates and saves.

The shadow copy follows s <- d s + (1 - d) p after every optimizer step, with the decay ramped
up as min(d, (1 + n) / (10 + n)) over the first n steps so that short runs are not dominated by
the random initialisation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class EMA:
    """Shadow copies of a model's parameters, updated after each optimizer step."""

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

    def weights_of(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict (buffers too) with the EMA weights in place of the parameters."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.update({k: v.clone() for k, v in self.shadow.items()})
        return state

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


@contextmanager
def swapped_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[nn.Module]:
    """The model in eval mode carrying ``weights`` (e.g. the EMA's) for the ``with`` block;
    its own weights and training mode come back afterwards."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.load_state_dict(weights)
    model.eval()
    try:
        yield model
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
