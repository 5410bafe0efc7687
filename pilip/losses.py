"""Training losses as a list of named, weighted terms: energy, forces, PITC, PISC.

PITC and PISC are the physics-informed weak losses of Takamoto, Zaverkin and Niepert
(arXiv 2408.05215), implemented as ``/work/shared/PIWSL.md`` specifies. Per structure A with
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

from dataclasses import dataclass

import torch
from torch import Tensor

from pilip import keys
from pilip.errors import PilipError
from pilip.forces import EnergyModel, energy_and_forces, energy_parts
from pilip.neighbors import segment_sum

ENERGY = "energy"  # MSE of the energy (eV^2; (eV/atom)^2 per atom)
FORCES = "forces"  # MSE of the force components (eV/A)^2, structures with force labels only
PITC = "pitc"  # Taylor-expansion consistency (eV^2; (eV/atom)^2 per atom)
PISC = "pisc"  # spatial (path-independence) consistency (eV^2; (eV/atom)^2 per atom)
TERM_NAMES = (ENERGY, FORCES, PITC, PISC)
WEAK_TERMS = (PITC, PISC)
DEFAULT_WEIGHTS = {ENERGY: 1.0, FORCES: 1.0, PITC: 1.2, PISC: 0.01}  # the paper's C_PITC, C_PISC
TOTAL = "total"
MODES = ("auto", "fused", "three_calls")

# model-input keys that the fused batch replicates three times
_STRUCTURE_KEYS = (keys.CELL, keys.PBC)


@dataclass(frozen=True)
class LossTerm:
    name: str  # one of TERM_NAMES
    weight: float = 1.0
    per_atom: bool = False  # divide energies / residuals by the structure's atom count


@dataclass(frozen=True)
class WeakLossOptions:
    eps: float = 0.05  # Angstrom: half-width of the uniform perturbations
    k: float = 0.0  # second-order factor in [0, 1]; 0.5 is the trapezoid rule
    center: bool = True  # subtract each perturbation's mean over the structure's atoms
    # "fused": one model call on 3x the structures, one autograd call (fastest on a GPU, where
    # the step is bound by kernel launches); "three_calls": A and B with forces, C energy-only
    # when k = 0 (fewer FLOPs: faster on a CPU); "auto": fused on CUDA, three_calls elsewhere
    mode: str = "auto"


def parse_terms(spec: str, per_atom: bool = False) -> list[LossTerm]:
    """Terms from text such as ``"energy,pitc,pisc"`` or ``"energy:1,pitc:0.5,pisc:0.01"``."""
    terms: list[LossTerm] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, weight_text = item.partition(":")
        name = name.strip().lower()
        if name not in TERM_NAMES:
            raise PilipError(f"unknown loss term {name!r} in {spec!r}: use {', '.join(TERM_NAMES)}")
        try:
            weight = float(weight_text) if weight_text else DEFAULT_WEIGHTS[name]
        except ValueError:
            raise PilipError(f"loss weight {weight_text!r} of {name!r} is not a number") from None
        terms.append(LossTerm(name, weight, per_atom and name != FORCES))
    check_terms(terms)
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
class _Evaluations:
    """Energies (n_struct,) and forces (n_atoms, 3) at A, B and C; None where not needed."""

    energy_a: Tensor
    forces_a: Tensor | None
    energy_b: Tensor | None = None
    forces_b: Tensor | None = None
    energy_c: Tensor | None = None
    forces_c: Tensor | None = None


def _evaluate_fused(
    model: EnergyModel, batch: dict[str, Tensor], d1: Tensor, d2: Tensor, create_graph: bool
) -> _Evaluations:
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
    return _Evaluations(
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
) -> _Evaluations:
    positions = batch[keys.POSITIONS]
    energy_a, forces_a = energy_and_forces(model, _model_input(batch, positions), create_graph)
    energy_b, forces_b = energy_and_forces(model, _model_input(batch, positions + d2), create_graph)
    batch_c = _model_input(batch, positions + d1)
    if need_forces_c:
        energy_c, forces_c = energy_and_forces(model, batch_c, create_graph)
    else:  # first order: C enters through its energy only
        with torch.set_grad_enabled(create_graph):
            energy_c, forces_c = model(batch_c), None
    return _Evaluations(energy_a, forces_a, energy_b, forces_b, energy_c, forces_c)


def _mean_square(residual: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of residual^2 over the entries with weight > 0 (all when weight is None)."""
    if weight is None:
        return (residual * residual).mean()
    w = weight.to(residual.dtype)
    residual = torch.where(w > 0, residual, torch.zeros_like(residual))
    return (w * residual * residual).sum() / w.sum().clamp(min=1.0)


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
    ``keys.STRUCTURE_WEIGHT`` 0 marks padding (``pilip.static_step``) for the weak terms. Terms with
    weight 0 are skipped, so their labels are not needed. The weak terms draw d1, d2 from
    ``generator`` (a CPU generator gives device-independent numbers). The graph for the
    parameter gradients is built when grad mode is on; under ``torch.no_grad()`` the values are
    still computed (forces need a local autograd pass).
    """
    options = options or WeakLossOptions()
    check_terms(terms, options)
    active = {t.name: t for t in terms if t.weight > 0}
    weak = any(name in active for name in WEAK_TERMS)
    if ENERGY in active and keys.ENERGY not in batch:
        raise PilipError(f"the energy loss needs {keys.ENERGY!r} in the batch: add labels")
    if FORCES in active and keys.FORCES not in batch:
        raise PilipError(
            f"the forces loss needs {keys.FORCES!r} in the batch: add force labels "
            "or give the forces term weight 0"
        )
    if weak and generator is None:
        raise PilipError("the weak losses need a torch.Generator for their perturbations")
    create_graph = torch.is_grad_enabled()
    # the reference energy (per-element shifts, thousands of eV) cancels from the weak
    # residuals and moves to the labels' side of the energy residual, in float64: float32
    # totals would round the weak residuals (~1e-3 eV) away
    model, reference = energy_parts(model)
    index = batch[keys.BATCH]
    n_atoms = batch[keys.N_ATOMS]
    n_struct = n_atoms.shape[0]

    if weak:
        d1, d2 = draw_perturbations(batch, options.eps, options.center, generator)
        mode = options.mode
        if mode == "auto":
            mode = "fused" if batch[keys.POSITIONS].is_cuda else "three_calls"
        if mode == "fused":
            ev = _evaluate_fused(model, batch, d1, d2, create_graph)
        else:
            ev = _evaluate_three_calls(model, batch, d1, d2, create_graph, options.k > 0)
    elif FORCES in active:
        ev = _Evaluations(
            *energy_and_forces(model, _model_input(batch, batch[keys.POSITIONS]), create_graph)
        )
    else:
        ev = _Evaluations(model(_model_input(batch, batch[keys.POSITIONS])), None)

    losses: dict[str, Tensor] = {}
    if ENERGY in active:
        target = batch[keys.ENERGY].double()
        if reference is not None:
            target = target - reference(batch)
        target = target.to(ev.energy_a.dtype)
        weight = batch.get(keys.ENERGY_WEIGHT)
        if weight is not None:  # unlabelled rows may hold NaN
            target = torch.where(weight > 0, target, torch.zeros_like(target))
        residual = ev.energy_a - target
        if active[ENERGY].per_atom:
            residual = residual / n_atoms.to(residual.dtype)
        losses[ENERGY] = _mean_square(residual, weight)

    if FORCES in active:
        reference = batch[keys.FORCES].to(ev.forces_a.dtype)
        weight = batch.get(keys.FORCE_WEIGHT)
        if weight is None:
            losses[FORCES] = ((ev.forces_a - reference) ** 2).mean()
        else:
            atom_weight = weight.to(reference.dtype).index_select(0, index)
            reference = torch.where(
                atom_weight[:, None] > 0, reference, torch.zeros_like(reference)
            )
            diff = ev.forces_a - reference
            losses[FORCES] = (atom_weight[:, None] * diff * diff).sum() / (
                3.0 * atom_weight.sum()
            ).clamp(min=1.0)

    if weak:
        k = options.k
        forces_a, forces_b = ev.forces_a, ev.forces_b
        if k > 0:
            forces_a = (1.0 - k) * forces_a + k * ev.forces_c
            forces_b = (1.0 - k) * forces_b + k * ev.forces_c
        # per-atom work terms F.d of both losses, summed per structure in one scatter
        work = torch.stack([(forces_a * d1).sum(-1), (forces_b * (d1 - d2)).sum(-1)], dim=-1)
        work = segment_sum(work, index, n_struct)  # (n_struct, 2)
        for column, name, energy_from in ((0, PITC, ev.energy_a), (1, PISC, ev.energy_b)):
            if name not in active:
                continue
            residual = ev.energy_c - energy_from + work[:, column]
            if active[name].per_atom:
                residual = residual / n_atoms.to(residual.dtype)
            losses[name] = _mean_square(residual, batch.get(keys.STRUCTURE_WEIGHT))

    by_name = {t.name: t for t in terms}
    losses[TOTAL] = sum(by_name[name].weight * value for name, value in losses.items())
    return losses
