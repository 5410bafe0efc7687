"""Training steps on batches of one fixed shape, captured once as a CUDA graph and replayed.

On a GPU the training step of small molecules is bound by kernel launches, not arithmetic
(benchmarks/README.md): the fused weak-loss step launches hundreds of small kernels. A CUDA
graph records them once and replays them with one launch, but needs every tensor to keep its
shape and address from step to step and nothing to wait on the host. So each batch is
padded to one ``StaticShape``:

* the real structures first, in their order;
* one single-atom placeholder structure for every empty slot (the last batch of an epoch);
* one padding structure holding the remaining atoms;
* candidate pairs precomputed (``keys.EDGE_INDEX``: every pair of atoms of each real
  structure, unpruned, which the cutoff envelope weighs exactly as the pruned list would),
  then filled up with copies of one pair of padding atoms ``PAD_SPACING`` apart (zero weight).

Padding atoms have atomic number 0 and sit ``PAD_SPACING`` A from each other; padding
structures carry weight 0 in every loss term (``keys.ENERGY_WEIGHT``, ``keys.FORCE_WEIGHT``,
``keys.STRUCTURE_WEIGHT``), so the losses and their parameter gradients equal those of the
unpadded batch (tested on the CPU). The graph covers the losses and the backward pass; the
gradient clipping, the optimizer step and the EMA run eagerly after each replay (a few
foreach kernels), so the learning rate may change without a new capture.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pilip import keys
from pilip.potential.losses import TOTAL, LossTerm, WeakLossOptions, compute_losses
from pilip.potential.neighbors import molecular_pairs

PAD_NUMBER = 0  # atomic number of padding atoms (embedded, never trained on: weight 0)
PAD_SPACING = 1000.0  # Angstrom between padding atoms: far beyond any cutoff
MAX_AUTO_ATOMS = 64  # "auto" pads only molecules up to this size (all pairs are kept)
# Whether ``static_shapes: auto`` may capture CUDA graphs. False until the CUDA tests
# (tests/unit/test_static_step.py, tests/unit/test_train.py, marked "needs CUDA") have passed on
# a real GPU: until then ``auto`` trains eagerly on CUDA and only ``always`` pads and captures.
GRAPHS_VERIFIED = False
_WARMUP = 3  # eager iterations on a side stream before capture (torch.cuda.graph needs them)


@dataclass(frozen=True)
class StaticShape:
    """The one shape every padded batch has: ``n_slots`` structures of up to ``max_atoms``."""

    n_slots: int  # real structures per step (labelled + unlabelled)
    max_atoms: int  # atoms of the largest structure

    @property
    def n_struct(self) -> int:
        return self.n_slots + 1  # + the padding structure

    @property
    def n_atoms(self) -> int:
        return self.n_slots * self.max_atoms + 2  # the padding structure has >= 2 atoms

    @property
    def n_pairs(self) -> int:
        return self.n_slots * self.max_atoms * (self.max_atoms - 1) + 1  # >= 1 padding pair


def pad_batch(batch: dict[str, Tensor], shape: StaticShape) -> dict[str, Tensor]:
    """``batch`` padded to ``shape`` (see the module docstring); same device and dtypes.

    Adds ``keys.EDGE_INDEX``, ``keys.STRUCTURE_WEIGHT``, ``keys.ENERGY_WEIGHT`` and (with
    forces) ``keys.FORCE_WEIGHT``. Host syncs: a few, for the sizes (build it on the CPU).
    """
    n_atoms = batch[keys.N_ATOMS]
    n_real = int(n_atoms.shape[0])
    real_atoms = int(batch[keys.POSITIONS].shape[0])
    if n_real > shape.n_slots or (n_real and int(n_atoms.max()) > shape.max_atoms):
        raise ValueError(f"a batch of {n_real} structures does not fit {shape}")
    device, dtype = batch[keys.POSITIONS].device, batch[keys.POSITIONS].dtype
    n_empty = shape.n_slots - n_real
    n_pad = shape.n_atoms - real_atoms - n_empty  # atoms of the padding structure, >= 2
    counts = torch.cat(
        [n_atoms, n_atoms.new_ones(n_empty), n_atoms.new_full((1,), n_pad)]
    )  # (n_struct,)
    n_fill = n_empty + n_pad  # padding atoms, after the real ones
    spread = torch.arange(1, n_fill + 1, device=device, dtype=dtype) * PAD_SPACING
    pad_positions = torch.zeros((n_fill, 3), device=device, dtype=dtype)
    pad_positions[:, 0] = spread

    pairs = molecular_pairs(n_atoms) if n_real else n_atoms.new_zeros((2, 0))
    first_pad = real_atoms + n_empty  # first atom of the padding structure
    pad_pair = torch.tensor([[first_pad], [first_pad + 1]], device=device)
    edge_index = torch.cat([pairs, pad_pair.expand(2, shape.n_pairs - pairs.shape[1])], dim=1)

    numbers = batch[keys.NUMBERS]
    real = torch.ones(n_real, device=device, dtype=dtype)
    padding = torch.zeros(n_empty + 1, device=device, dtype=dtype)
    out = {
        keys.NUMBERS: torch.cat([numbers, numbers.new_full((n_fill,), PAD_NUMBER)]),
        keys.POSITIONS: torch.cat([batch[keys.POSITIONS], pad_positions]),
        keys.N_ATOMS: counts,
        keys.BATCH: torch.repeat_interleave(
            torch.arange(shape.n_struct, device=device), counts, output_size=shape.n_atoms
        ),
        keys.EDGE_INDEX: edge_index,
        keys.STRUCTURE_WEIGHT: torch.cat([real, padding]),
    }
    if keys.ENERGY in batch:
        energy = batch[keys.ENERGY].to(dtype)
        weight = batch.get(keys.ENERGY_WEIGHT, real).to(dtype)
        out[keys.ENERGY] = torch.cat([energy, padding])
        out[keys.ENERGY_WEIGHT] = torch.cat([weight, padding])
    if keys.FORCES in batch:
        forces = batch[keys.FORCES].to(dtype)
        weight = batch.get(keys.FORCE_WEIGHT, real).to(dtype)
        out[keys.FORCES] = torch.cat([forces, forces.new_zeros((n_fill, 3))])
        out[keys.FORCE_WEIGHT] = torch.cat([weight, padding])
    return out


def batch_shape(
    max_atoms: int, batch_size: int, n_train: int, unlabelled_batch_size: int = 0
) -> StaticShape:
    """The shape for batches of ``min(batch_size, n_train)`` labelled structures plus
    ``unlabelled_batch_size`` unlabelled ones, none larger than ``max_atoms``."""
    return StaticShape(min(batch_size, n_train) + unlabelled_batch_size, max(max_atoms, 1))


class StaticStep:
    """Losses and backward pass of padded batches: ``step(padded)`` -> losses.

    The parameter gradients are left in ``p.grad`` for an eager optimizer step. With
    ``capture`` (CUDA only) the first call records the losses and backward pass as a CUDA
    graph (after ``_WARMUP`` eager passes on a side stream, whose gradients are discarded:
    no parameter changes) and every call replays it: do not reset ``p.grad`` to None in
    between, and read the returned losses before the next call (they are overwritten).
    Without ``capture`` the same padded step runs eagerly (any device). A capture that fails
    is reported through ``log`` (else a warning) and the step runs eagerly from then on:
    slower, never wrong. The perturbations come from ``generator``; a capture needs the
    device's default CUDA generator.
    """

    def __init__(
        self,
        model: nn.Module,
        terms: list[LossTerm],
        options: WeakLossOptions,
        generator: torch.Generator,
        capture: bool,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.model, self.terms, self.options = model, terms, options
        self.generator, self.capture = generator, capture
        self.log = log
        self.static: dict[str, Tensor] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: dict[str, Tensor] = {}

    def _losses(self) -> dict[str, Tensor]:
        assert self.static is not None
        losses = compute_losses(self.model, self.static, self.terms, self.generator, self.options)
        losses[TOTAL].backward()
        return {name: value.detach() for name, value in losses.items()}

    def _zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def _record(self) -> None:
        # a capture may only draw from the default generator of the device current at capture
        with torch.cuda.device(self.generator.device):
            self._record_on_current_device()

    def _record_on_current_device(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(_WARMUP):
                self._zero_grad()
                self._losses()
        torch.cuda.current_stream().wait_stream(side)
        self._zero_grad()  # the captured backward then writes the gradients, not adds
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self._losses()

    def __call__(self, padded: dict[str, Tensor]) -> dict[str, Tensor]:
        """Losses (0-dim, detached) of ``padded``; gradients in the parameters' ``.grad``."""
        if self.static is None:
            device = next(self.model.parameters()).device
            self.static = {k: v.to(device).clone() for k, v in padded.items()}
        else:
            if padded.keys() != self.static.keys():
                raise ValueError("a padded batch with other keys than the first one")
            for key, value in padded.items():
                self.static[key].copy_(value, non_blocking=True)
        if not self.capture:
            self._zero_grad()
            return self._losses()
        if self.graph is None:
            try:
                self._record()
            except Exception as exc:  # noqa: BLE001 - a failed capture must not end training
                self.capture, self.graph, self.outputs = False, None, {}
                message = f"CUDA graph capture failed ({exc}); the padded step runs eagerly"
                if self.log is not None:
                    self.log(message)
                else:
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
                self._zero_grad()
                return self._losses()
        assert self.graph is not None
        self.graph.replay()
        return self.outputs
