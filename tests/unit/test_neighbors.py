"""Neighbour lists: molecular all-pairs in torch and periodic (vesin) against ASE's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from model_batches import molecules, to_batch

from pilip import keys
from pilip.potential.neighbors import molecular_pairs, neighbor_list


def _ase_edges(atoms: Atoms, cutoff: float) -> tuple[int, np.ndarray]:
    i, j, d = ase_neighbor_list("ijd", atoms, cutoff)
    order = np.lexsort((d, j, i))
    return len(i), np.stack([i[order], j[order], d[order]], axis=1)


def _our_edges(batch: dict, cutoff: float, structure: int) -> tuple[int, np.ndarray]:
    edge_index, vectors = neighbor_list(batch, cutoff)
    first = int(torch.cumsum(batch[keys.N_ATOMS], 0)[structure] - batch[keys.N_ATOMS][structure])
    mine = batch[keys.BATCH][edge_index[0]] == structure
    i = (edge_index[0][mine] - first).numpy()
    j = (edge_index[1][mine] - first).numpy()
    d = torch.linalg.vector_norm(vectors[mine], dim=-1).numpy()
    order = np.lexsort((d, j, i))
    return len(i), np.stack([i[order], j[order], d[order]], axis=1)


def test_molecular_pairs_are_all_distinct_pairs_within_each_structure():
    n_atoms = torch.tensor([3, 1, 4, 2])
    pairs = {tuple(p) for p in molecular_pairs(n_atoms).T.tolist()}
    expected = set()
    start = 0
    for n in n_atoms.tolist():
        expected |= {
            (a, b) for a in range(start, start + n) for b in range(start, start + n) if a != b
        }
        start += n
    assert pairs == expected
    assert molecular_pairs(n_atoms).shape[1] == len(expected)  # no duplicates


@pytest.mark.parametrize("cutoff", [1.2, 3.0, 10.0])
def test_molecular_neighbor_list_equals_ase(cutoff):
    structures = molecules(("CH3CH2OH", "H2O", "C6H6"))
    batch = to_batch(structures)
    for s, atoms in enumerate(structures):
        count, edges = _our_edges(batch, cutoff, s)
        ase_count, ase_edges = _ase_edges(atoms, cutoff)
        assert count == ase_count
        np.testing.assert_allclose(edges, ase_edges, atol=1e-10)


def _cells() -> list[Atoms]:
    rng = np.random.default_rng(0)
    skewed = Atoms(
        "CCHHO",
        scaled_positions=rng.uniform(size=(5, 3)),
        cell=[[4.0, 0.0, 0.0], [0.6, 3.8, 0.0], [0.3, -0.4, 4.2]],
        pbc=True,
    )
    slab = Atoms(
        "CHHO",
        scaled_positions=rng.uniform(size=(4, 3)),
        cell=[[3.0, 0.0, 0.0], [0.0, 3.5, 0.0], [0.0, 0.0, 12.0]],
        pbc=[True, True, False],
    )
    return [skewed, slab]


def test_periodic_neighbor_list_equals_ase_count_and_distances():
    cutoff = 5.0  # larger than the cells: many periodic images, self-images included
    structures = [*_cells(), molecules(("CH3CH2OH",))[0]]
    batch = to_batch(structures)
    for s, atoms in enumerate(structures):
        count, edges = _our_edges(batch, cutoff, s)
        ase_count, ase_edges = _ase_edges(atoms, cutoff)
        assert count == ase_count > 0
        np.testing.assert_allclose(edges, ase_edges, atol=1e-10)
    assert (_our_edges(batch, cutoff, 0)[1][:, 0] == _our_edges(batch, cutoff, 0)[1][:, 1]).any()


def test_periodic_edge_vectors_carry_gradients_to_positions_and_cell():
    batch = to_batch(_cells())
    batch[keys.POSITIONS].requires_grad_(True)
    batch[keys.CELL].requires_grad_(True)
    _, vectors = neighbor_list(batch, 4.0)
    grad_positions, grad_cell = torch.autograd.grad(
        vectors.pow(2).sum(), [batch[keys.POSITIONS], batch[keys.CELL]]
    )
    assert grad_cell.abs().sum() > 0
    # moving all atoms of a structure together leaves its edge vectors unchanged
    per_structure = torch.zeros(2, 3, dtype=grad_positions.dtype).index_add(
        0, batch[keys.BATCH], grad_positions
    )
    torch.testing.assert_close(per_structure, torch.zeros_like(per_structure), atol=1e-9, rtol=0)
