"""Neighbour lists built inside a model's ``forward`` so that every derivative order flows.

The *indices* of a neighbour list are piecewise constant in the positions, so they carry no
gradient; the edge *vectors* are always recomputed in torch from the positions (and the cell),
so energies, forces and the forces' parameter gradients (double backward) are exact.

Molecules (no cell): all ordered pairs of distinct atoms of the same structure, built with a
handful of vectorised tensor ops (no Python loop over structures), then pruned to the cutoff.
Periodic cells: ``vesin`` gives the pair indices and integer cell shifts on the CPU; the
vectors ``r_j - r_i + S @ cell`` are recomputed in torch.

Static shapes: a batch may carry ``keys.EDGE_INDEX`` = ``molecular_pairs(n_atoms)``, computed
once by whoever builds the batch. These candidate pairs are then used as they are, without
pruning: pairs beyond the cutoff get exactly zero weight from the cutoff envelope, so the
energy and all its derivatives are unchanged, and the forward pass has no host sync and no
data-dependent shape (what CUDA graphs need).

Convention (``keys.EDGE_INDEX``): ``edge_index[0]`` is the receiver i, ``edge_index[1]`` the
sender j, and the edge vector points from i to j.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pilip import keys

__all__ = ["edge_vectors", "molecular_pairs", "neighbor_list", "segment_sum"]


def segment_sum(values: Tensor, index: Tensor, n_segments: int) -> Tensor:
    """Sum ``values`` (n, ...) into ``n_segments`` rows by ``index`` (n,) long."""
    # in place on a fresh buffer: two kernels instead of three (zeros, clone, add)
    return values.new_zeros((n_segments, *values.shape[1:])).index_add_(0, index, values)


def molecular_pairs(n_atoms: Tensor) -> Tensor:
    """All ordered pairs (i, j), i != j, of atoms in the same structure.

    ``n_atoms`` (n_struct,) long. Returns (2, sum n(n-1)) long on the same device, atoms
    numbered as in the concatenated batch. One host sync (the total pair count).
    """
    n = n_atoms.long()
    first_atom = torch.cumsum(n, 0) - n  # (n_struct,)
    pairs_per = n * (n - 1)
    first_pair = torch.cumsum(pairs_per, 0) - pairs_per
    total = int(pairs_per.sum())
    structure = torch.repeat_interleave(
        torch.arange(n.shape[0], device=n.device), pairs_per, output_size=total
    )
    local = torch.arange(total, device=n.device) - first_pair[structure]
    n_others = (n - 1)[structure]
    i = torch.div(local, n_others, rounding_mode="floor")
    j = local - i * n_others
    # j runs over the n-1 atoms other than i: skip the diagonal
    j = j + (j >= i).long()
    offset = first_atom[structure]
    return torch.stack([i + offset, j + offset])


def _periodic_pairs(
    positions: Tensor, n_atoms: Tensor, cell: Tensor, pbc: Tensor, cutoff: float
) -> tuple[Tensor, Tensor]:
    """Pair indices (2, n_edges) and integer cell shifts (n_edges, 3) from vesin, per structure."""
    from vesin import NeighborList

    calculator = NeighborList(cutoff=cutoff, full_list=True)
    pos_np = positions.detach().cpu().to(torch.float64).numpy()
    cell_np = cell.detach().cpu().to(torch.float64).numpy()
    pbc_np = pbc.detach().cpu().numpy().astype(bool)
    sizes = n_atoms.detach().cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    index_parts, shift_parts = [], []
    for s, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        periodic = pbc_np[s]
        box = cell_np[s] if periodic.any() else np.zeros((3, 3))
        i, j, shifts = calculator.compute(
            pos_np[start : start + size], box, periodic.tolist(), quantities="ijS"
        )
        index_parts.append(np.stack([i, j]).astype(np.int64) + start)
        shift_parts.append(shifts.astype(np.int64))
    edge_index = torch.from_numpy(np.concatenate(index_parts, axis=1)).to(positions.device)
    cell_shift = torch.from_numpy(np.concatenate(shift_parts, axis=0)).to(positions.device)
    return edge_index, cell_shift


def edge_vectors(positions: Tensor, edge_index: Tensor) -> Tensor:
    """r_sender - r_receiver (n_edges, 3) with one gather (its backward is one index_add)."""
    ends = positions.index_select(0, edge_index.reshape(-1)).view(2, -1, 3)
    return ends[1] - ends[0]


def neighbor_list(batch: dict[str, Tensor], cutoff: float) -> tuple[Tensor, Tensor]:
    """Edges within ``cutoff`` (Angstrom) and their vectors, differentiable in the positions.

    Reads ``keys.POSITIONS`` (n_atoms, 3) A, ``keys.N_ATOMS`` (n_struct,), ``keys.BATCH``
    (n_atoms,) (structure of each atom), and, for periodic
    structures, ``keys.CELL`` (n_struct, 3, 3) A (rows are cell vectors) and ``keys.PBC``
    (n_struct, 3) bool. Returns ``edge_index`` (2, n_edges) long [receiver, sender] and
    ``vectors`` (n_edges, 3) A = r_sender - r_receiver (+ periodic image shift). For molecules,
    a ``keys.EDGE_INDEX`` in the batch is taken as the candidate pairs and returned unpruned.
    """
    positions = batch[keys.POSITIONS]
    n_atoms = batch[keys.N_ATOMS]
    if keys.CELL in batch and keys.PBC in batch and bool(batch[keys.PBC].any()):
        cell = batch[keys.CELL].to(positions.dtype)
        edge_index, cell_shift = _periodic_pairs(positions, n_atoms, cell, batch[keys.PBC], cutoff)
        structure = batch[keys.BATCH].index_select(0, edge_index[0])
        # (n_edges, 3) @ (n_edges, 3, 3): the image shift in Angstrom, differentiable in the cell
        image = torch.einsum(
            "ek,ekx->ex", cell_shift.to(positions.dtype), cell.index_select(0, structure)
        )
        vectors = edge_vectors(positions, edge_index) + image
        return edge_index, vectors
    if keys.EDGE_INDEX in batch:  # precomputed candidate pairs: keep them all (static shapes)
        edge_index = batch[keys.EDGE_INDEX]
        return edge_index, edge_vectors(positions, edge_index)
    pairs = molecular_pairs(n_atoms)
    with torch.no_grad():
        vectors = edge_vectors(positions.detach(), pairs)
        keep = torch.nonzero((vectors * vectors).sum(-1) < cutoff * cutoff).squeeze(-1)
    edge_index = pairs.index_select(1, keep)
    return edge_index, edge_vectors(positions, edge_index)
