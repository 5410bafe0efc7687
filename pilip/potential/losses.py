"""Training losses as a list of named, weighted terms: energy, forces, PITC, PISC.

PITC and PISC are the physics-informed weak losses of Takamoto, Zaverkin and Niepert
(arXiv 2408.05215). Per structure A with
positions R and fresh perturbations d1, d2 ~ U[-eps, eps] (per atom and coordinate, optionally
centred per structure), C = R + d1 and B = R + d2:

    PITC residual  E(C) - [E(R) - sum_i F~_i(R) . d1_i],          F~(R) = (1-k) F(R) + k F(C)
    PISC residual  E(C) - [E(B) - sum_i F~_i(B) . (d1_i - d2_i)], F~(B) = (1-k) F(B) + k F(C)

each summed over the atoms of ONE structure, squared, and averaged over the structures. The
weak losses need no labels, so they run on unlabelled structures too (``keys.ENERGY_WEIGHT``
0). "fused" sends A, B and C through the model as one batch of 3x the structures with one
autograd call; "three_calls" is the paper's way, with C energy-only when k = 0. Both give the
same losses and gradients; the default "auto" picks fused on CUDA (where the step is bound by
kernel launches) and three calls on a CPU (where the fused batch's extra FLOPs, forces at C,
cost more than the launches it saves: benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pilip import keys
from pilip.errors import PilipError
from pilip.potential.forces import EnergyModel, ReferenceEnergy, energy_and_forces, energy_parts
from pilip.potential.neighbors import segment_sum
from pilip.potential.terms import (  # noqa: F401 - the names live in one registry
    ENERGY,
    FORCES,
    PISC,
    PITC,
    TERM_NAMES,
    TOTAL,
    WEAK_TERMS,
)
from pilip.potential.terms import WEAK_MODES as MODES

# model-input keys that the fused batch replicates three times
_STRUCTURE_KEYS = (keys.CELL, keys.PBC)


@dataclass(frozen=True)
class LossTerm:
    name: str  # one of TERM_NAMES
    weight: float = 1.0
    per_atom: bool = False  # divide energies / residuals by the structure's atom count


@dataclass(frozen=True)
class WeakLossOptions:
    """How PITC and PISC perturb and call the model. No defaults for ``eps`` and ``k``: they are
    declared once, in ``pilip.potential.train_config.TrainConfig`` (its ``weak_options()``)."""

    eps: float  # Angstrom: half-width of the uniform perturbations
    k: float  # second-order factor in [0, 1]; 0.5 is the trapezoid rule
    center: bool = True  # subtract each perturbation's mean over the structure's atoms
    # "fused": one model call on 3x the structures, one autograd call (fastest on a GPU, where
    # the step is bound by kernel launches); "three_calls": A and B with forces, C energy-only
    # when k = 0 (fewer FLOPs: faster on a CPU); "auto": fused on CUDA, three_calls elsewhere
    mode: str = "auto"


def make_terms(names: list[str], weights: dict[str, float], per_atom: bool) -> list[LossTerm]:
    """The terms ``names`` (e.g. ``--losses energy,pitc,pisc``) with ``weights[name]``.

    ``per_atom`` applies to every term but the forces (forces are per atom already).
    """
    terms = []
    for name in names:
        if name not in TERMS:
            raise PilipError(f"unknown loss {name!r} in --losses: use {', '.join(TERM_NAMES)}")
        terms.append(LossTerm(name, float(weights[name]), per_atom and name != FORCES))
    return terms


def check_terms(terms: list[LossTerm], options: WeakLossOptions | None = None) -> None:
    """Raise PilipError for duplicate or unknown terms, negative weights or bad options."""
    names = [t.name for t in terms]
    for term in terms:
        if term.name not in TERM_NAMES:
            raise PilipError(f"unknown loss term {term.name!r}: use {', '.join(TERM_NAMES)}")
        if names.count(term.name) > 1:
            raise PilipError(f"loss term {term.name!r} is given twice: give each term once")
        if not term.weight >= 0.0:
            raise PilipError(f"loss weight of {term.name!r} is {term.weight}: must be >= 0")
        if term.name == FORCES and term.per_atom:
            raise PilipError("the forces loss has no per-atom option: forces are per atom")
    if not any(t.weight > 0 for t in terms):
        raise PilipError("no loss term with a positive weight: give at least one")
    if options is not None:
        if options.mode not in MODES:
            raise PilipError(f"weak-loss mode {options.mode!r}: use {' or '.join(MODES)}")
        if not 0.0 <= options.k <= 1.0:
            raise PilipError(f"second-order factor k = {options.k}: must lie in [0, 1]")
        if any(t.name in WEAK_TERMS and t.weight > 0 for t in terms) and not options.eps > 0:
            raise PilipError(f"perturbation eps = {options.eps} A: must be > 0")


def draw_perturbations(
    batch: dict[str, Tensor], eps: float, center: bool, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Fresh d1, d2 (n_atoms, 3) A, uniform in [-eps, eps], optionally centred per structure.

    Drawn in float64 on the generator's device, so that a CPU generator gives the same
    perturbations whatever the model's device and dtype; laid out atom by atom, so that (on a
    CPU generator) the first atoms of a padded batch get what they would get unpadded.
    """
    positions = batch[keys.POSITIONS]
    n = positions.shape[0]
    u = torch.rand((n, 2, 3), generator=generator, device=generator.device, dtype=torch.float64)
    d = ((2.0 * u - 1.0) * eps).to(device=positions.device, dtype=positions.dtype)
    if center:
        n_atoms = batch[keys.N_ATOMS]
        total = d.new_zeros((n_atoms.shape[0], 2, 3)).index_add(0, batch[keys.BATCH], d)
        mean = total / n_atoms.to(d.dtype)[:, None, None]
        d = d - mean.index_select(0, batch[keys.BATCH])
    return d[:, 0], d[:, 1]


def _model_input(batch: dict[str, Tensor], positions: Tensor) -> dict[str, Tensor]:
    out = {
        k: batch[k]
        for k in (keys.NUMBERS, keys.BATCH, keys.N_ATOMS, keys.EDGE_INDEX, *_STRUCTURE_KEYS)
        if k in batch
    }
    out[keys.POSITIONS] = positions
    return out


def _stack_three(batch: dict[str, Tensor], positions: Tensor) -> dict[str, Tensor]:
    """One batch of 3 n_struct structures: the original (A), then B, then C (same atoms)."""
    n_struct = batch[keys.N_ATOMS].shape[0]
    index = batch[keys.BATCH]
    out = {
        keys.POSITIONS: positions,
        keys.NUMBERS: batch[keys.NUMBERS].repeat(3),
        keys.BATCH: torch.cat([index, index + n_struct, index + 2 * n_struct]),
        keys.N_ATOMS: batch[keys.N_ATOMS].repeat(3),
    }
    if keys.EDGE_INDEX in batch:  # precomputed candidate pairs: the same pairs in each copy
        edges, n = batch[keys.EDGE_INDEX], index.shape[0]
        out[keys.EDGE_INDEX] = torch.cat([edges, edges + n, edges + 2 * n], dim=1)
    for key in _STRUCTURE_KEYS:
        if key in batch:
            value = batch[key]
            out[key] = value.repeat(3, *([1] * (value.dim() - 1)))
    return out


@dataclass
class Evaluations:
    """The model at the points the active terms need: energies (n_struct,) eV in the model's
    dtype (without the position-independent reference energy, see ``pilip.potential.forces``) and
    forces
    (n_atoms, 3) eV/A at A (the structures), B = A + d2 and C = A + d1; None where not needed."""

    energy_a: Tensor
    forces_a: Tensor | None = None
    energy_b: Tensor | None = None
    forces_b: Tensor | None = None
    energy_c: Tensor | None = None
    forces_c: Tensor | None = None
    d1: Tensor | None = None  # (n_atoms, 3) A, the perturbation of C
    d2: Tensor | None = None  # (n_atoms, 3) A, the perturbation of B
    reference: ReferenceEnergy | None = None  # float64 reference energy, batch -> (n_struct,)
    _work: Tensor | None = None

    def work(self, batch: dict[str, Tensor], k: float) -> Tensor:
        """(n_struct, 2) eV: sum_i F~_i . d1_i (PITC) and sum_i F~_i . (d1_i - d2_i) (PISC).

        One scatter for both weak terms (cached): F~ = (1-k) F + k F(C) at A and at B.
        """
        if self._work is None:
            forces_a, forces_b = self.forces_a, self.forces_b
            if k > 0:
                forces_a = (1.0 - k) * forces_a + k * self.forces_c
                forces_b = (1.0 - k) * forces_b + k * self.forces_c
            per_atom = torch.stack(
                [(forces_a * self.d1).sum(-1), (forces_b * (self.d1 - self.d2)).sum(-1)], dim=-1
            )
            self._work = segment_sum(per_atom, batch[keys.BATCH], batch[keys.N_ATOMS].shape[0])
        return self._work


def _evaluate_fused(
    model: EnergyModel, batch: dict[str, Tensor], d1: Tensor, d2: Tensor, create_graph: bool
) -> Evaluations:
    positions = batch[keys.POSITIONS]
    n_struct = batch[keys.N_ATOMS].shape[0]
    n = positions.shape[0]
    with torch.enable_grad():
        stacked = torch.cat([positions, positions + d2, positions + d1])
        if not stacked.requires_grad:
            stacked.requires_grad_(True)
        energy = model(_stack_three(batch, stacked))  # (3 n_struct,)
        # structures are independent: the gradient of the summed energy is every atom's force
        (gradient,) = torch.autograd.grad(energy.sum(), stacked, create_graph=create_graph)
    forces = -gradient
    return Evaluations(
        energy_a=energy[:n_struct],
        forces_a=forces[:n],
        energy_b=energy[n_struct : 2 * n_struct],
        forces_b=forces[n : 2 * n],
        energy_c=energy[2 * n_struct :],
        forces_c=forces[2 * n :],
    )


def _evaluate_three_calls(
    model: EnergyModel,
    batch: dict[str, Tensor],
    d1: Tensor,
    d2: Tensor,
    create_graph: bool,
    need_forces_c: bool,
) -> Evaluations:
    positions = batch[keys.POSITIONS]
    energy_a, forces_a = energy_and_forces(model, _model_input(batch, positions), create_graph)
    energy_b, forces_b = energy_and_forces(model, _model_input(batch, positions + d2), create_graph)
    batch_c = _model_input(batch, positions + d1)
    if need_forces_c:
        energy_c, forces_c = energy_and_forces(model, batch_c, create_graph)
    else:  # first order: C enters through its energy only
        with torch.set_grad_enabled(create_graph):
            energy_c, forces_c = model(batch_c), None
    return Evaluations(energy_a, forces_a, energy_b, forces_b, energy_c, forces_c)


def evaluate_points(
    model: EnergyModel,
    batch: dict[str, Tensor],
    names: set[str],
    generator: torch.Generator | None,
    options: WeakLossOptions,
) -> Evaluations:
    """The model at the points the terms ``names`` need (see :class:`Evaluations`).

    Energy only: one call at A. Forces: one autograd pass at A. A weak term: fresh d1, d2 from
    ``generator``, then A, B and C fused in one call or in three (``options.mode``). The graph
    for the parameter gradients is kept when grad mode is on.
    """
    create_graph = torch.is_grad_enabled()
    # the reference energy (per-element shifts, thousands of eV) cancels from the weak
    # residuals and moves to the labels' side of the energy residual, in float64: float32
    # totals would round the weak residuals (~1e-3 eV) away
    network, reference = energy_parts(model)
    if names & set(WEAK_TERMS):
        if generator is None:
            raise PilipError("the weak losses need a torch.Generator for their perturbations")
        d1, d2 = draw_perturbations(batch, options.eps, options.center, generator)
        mode = options.mode
        if mode == "auto":
            mode = "fused" if batch[keys.POSITIONS].is_cuda else "three_calls"
        if mode == "fused":
            ev = _evaluate_fused(network, batch, d1, d2, create_graph)
        else:
            ev = _evaluate_three_calls(network, batch, d1, d2, create_graph, options.k > 0)
        ev.d1, ev.d2 = d1, d2
    elif FORCES in names:
        inputs = _model_input(batch, batch[keys.POSITIONS])
        ev = Evaluations(*energy_and_forces(network, inputs, create_graph))
    else:
        ev = Evaluations(network(_model_input(batch, batch[keys.POSITIONS])))
    ev.reference = reference
    return ev


def _mean_square(residual: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of residual^2 over the entries with weight > 0 (all when weight is None)."""
    if weight is None:
        return (residual * residual).mean()
    w = weight.to(residual.dtype)
    residual = torch.where(w > 0, residual, torch.zeros_like(residual))
    return (w * residual * residual).sum() / w.sum().clamp(min=1.0)


def _per_atom(residual: Tensor, batch: dict[str, Tensor], term: LossTerm) -> Tensor:
    return residual / batch[keys.N_ATOMS].to(residual.dtype) if term.per_atom else residual


# --- one function per term: (evaluations, batch, term, options) -> 0-dim loss ----------------


def energy_term(
    ev: Evaluations, batch: dict[str, Tensor], term: LossTerm, options: WeakLossOptions
) -> Tensor:
    """Mean square of E_model - E_label over the structures with an energy label (eV^2)."""
    target = batch[keys.ENERGY].double()
    if ev.reference is not None:
        target = target - ev.reference(batch)
    target = target.to(ev.energy_a.dtype)
    weight = batch.get(keys.ENERGY_WEIGHT)
    if weight is not None:  # unlabelled rows may hold NaN
        target = torch.where(weight > 0, target, torch.zeros_like(target))
    return _mean_square(_per_atom(ev.energy_a - target, batch, term), weight)


def forces_term(
    ev: Evaluations, batch: dict[str, Tensor], term: LossTerm, options: WeakLossOptions
) -> Tensor:
    """Mean square of the force components' errors over atoms with force labels ((eV/A)^2)."""
    reference = batch[keys.FORCES].to(ev.forces_a.dtype)
    weight = batch.get(keys.FORCE_WEIGHT)
    if weight is None:
        return ((ev.forces_a - reference) ** 2).mean()
    atom_weight = weight.to(reference.dtype).index_select(0, batch[keys.BATCH])
    reference = torch.where(atom_weight[:, None] > 0, reference, torch.zeros_like(reference))
    diff = ev.forces_a - reference
    return (atom_weight[:, None] * diff * diff).sum() / (3.0 * atom_weight.sum()).clamp(min=1.0)


def pitc_term(
    ev: Evaluations, batch: dict[str, Tensor], term: LossTerm, options: WeakLossOptions
) -> Tensor:
    """PITC: mean square of E(C) - [E(A) - sum_i F~_i(A) . d1_i] over real structures."""
    residual = ev.energy_c - ev.energy_a + ev.work(batch, options.k)[:, 0]
    return _mean_square(_per_atom(residual, batch, term), batch.get(keys.STRUCTURE_WEIGHT))


def pisc_term(
    ev: Evaluations, batch: dict[str, Tensor], term: LossTerm, options: WeakLossOptions
) -> Tensor:
    """PISC: mean square of E(C) - [E(B) - sum_i F~_i(B) . (d1_i - d2_i)] over real structures."""
    residual = ev.energy_c - ev.energy_b + ev.work(batch, options.k)[:, 1]
    return _mean_square(_per_atom(residual, batch, term), batch.get(keys.STRUCTURE_WEIGHT))


TermFunction = Callable[[Evaluations, dict[str, Tensor], LossTerm, WeakLossOptions], Tensor]
TERMS: dict[str, TermFunction] = {
    ENERGY: energy_term,
    FORCES: forces_term,
    PITC: pitc_term,
    PISC: pisc_term,
}


def compute_losses(
    model: EnergyModel,
    batch: dict[str, Tensor],
    terms: list[LossTerm],
    generator: torch.Generator | None = None,
    options: WeakLossOptions | None = None,
) -> dict[str, Tensor]:
    """Every term with a positive weight (unweighted, 0-dim) and ``"total"`` = sum weight * term.

    ``batch`` holds the model inputs and, for the supervised terms, ``keys.ENERGY`` (n_struct,)
    eV (``keys.ENERGY_WEIGHT`` 0 marks unlabelled structures) and ``keys.FORCES`` (n_atoms, 3)
    eV/A (``keys.FORCE_WEIGHT`` 0 marks structures without usable force labels);
    ``keys.STRUCTURE_WEIGHT`` 0 marks padding (``pilip.potential.static_step``) for the weak terms.
    Terms with
    weight 0 are skipped, so their labels are not needed. The weak terms draw d1, d2 from
    ``generator`` (a CPU generator gives device-independent numbers). The graph for the
    parameter gradients is built when grad mode is on; under ``torch.no_grad()`` the values are
    still computed (forces need a local autograd pass). ``options`` None: the weak-loss
    settings' declared defaults.
    """
    if options is None:
        from pilip.potential.train_config import TrainConfig

        options = TrainConfig().weak_options()
    check_terms(terms, options)
    active = [t for t in terms if t.weight > 0]
    names = {t.name for t in active}
    if ENERGY in names and keys.ENERGY not in batch:  # before the (costly) model calls
        raise PilipError(f"the energy loss needs {keys.ENERGY!r} in the batch: add labels")
    if FORCES in names and keys.FORCES not in batch:
        raise PilipError(
            f"the forces loss needs {keys.FORCES!r} in the batch: add force labels "
            "or give the forces term weight 0"
        )
    ev = evaluate_points(model, batch, names, generator, options)
    losses = {t.name: TERMS[t.name](ev, batch, t, options) for t in active}
    losses[TOTAL] = sum(t.weight * losses[t.name] for t in active)
    return losses
