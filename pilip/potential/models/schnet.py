"""SchNet (Schuett et al., J. Chem. Phys. 148, 241722, 2018): continuous-filter convolutions.

model(batch) -> per-structure energies (n_struct,) in eV, per-element shifts included
(``ShiftedEnergyModel``: the shifts are summed apart, in float64). The
neighbour list is built inside ``forward`` from the positions; forces come from
``pilip.potential.forces.energy_and_forces``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from pilip import keys
from pilip.potential.models.common import (
    EnergyShift,
    GaussianRBF,
    ShiftedEnergyModel,
    polynomial_envelope,
    shifted_softplus,
)
from pilip.potential.neighbors import neighbor_list, segment_sum


@dataclass
class SchNetConfig:
    cutoff: float = 5.0  # Angstrom
    n_features: int = 128  # width of the atom features
    n_filters: int = 128  # width of the continuous filters
    n_rbf: int = 50  # Gaussians on [0, cutoff]
    n_interactions: int = 3
    envelope_p: int = 5  # polynomial cutoff envelope order (C2 at the cutoff for p >= 3)
    max_z: int = 118  # largest atomic number embedded
    dtype: str = "float32"  # or "float64"


class CFConv(nn.Module):
    """x_i <- sum_j x_j * W(r_ij) u(r_ij): a filter generated from the distance."""

    def __init__(self, cfg: SchNetConfig) -> None:
        super().__init__()
        self.filter_in = nn.Linear(cfg.n_rbf, cfg.n_filters)
        self.filter_out = nn.Linear(cfg.n_filters, cfg.n_filters)
        self.atom_in = nn.Linear(cfg.n_features, cfg.n_filters, bias=False)
        self.atom_out = nn.Linear(cfg.n_filters, cfg.n_features)
        self.dense = nn.Linear(cfg.n_features, cfg.n_features)

    def forward(self, x: Tensor, rbf: Tensor, envelope: Tensor, edge_index: Tensor) -> Tensor:
        """x (n_atoms, F), rbf (n_edges, n_rbf), envelope (n_edges,) -> update (n_atoms, F)."""
        w = self.filter_out(shifted_softplus(self.filter_in(rbf))) * envelope[:, None]
        receiver, sender = edge_index
        # index_select, not x[sender]: its backward is one index_add, not a sort-based put
        messages = self.atom_in(x).index_select(0, sender) * w  # (n_edges, n_filters)
        y = segment_sum(messages, receiver, x.shape[0])
        return self.dense(shifted_softplus(self.atom_out(y)))


class SchNet(ShiftedEnergyModel):
    def __init__(self, cfg: SchNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cutoff = cfg.cutoff
        self.embedding = nn.Embedding(cfg.max_z + 1, cfg.n_features)
        self.rbf = GaussianRBF(cfg.n_rbf, cfg.cutoff)
        self.interactions = nn.ModuleList(CFConv(cfg) for _ in range(cfg.n_interactions))
        self.readout_hidden = nn.Linear(cfg.n_features, cfg.n_features // 2)
        self.readout_out = nn.Linear(cfg.n_features // 2, 1)
        self.energy_shift = EnergyShift()
        self.to(getattr(torch, cfg.dtype))

    def hparams(self) -> dict:
        return asdict(self.cfg)

    def network_energy(self, batch: dict[str, Tensor]) -> Tensor:
        """Energies (n_struct,) eV without the per-element reference (positions in A)."""
        dtype = self.readout_out.weight.dtype
        positions = batch[keys.POSITIONS].to(dtype)
        numbers = batch[keys.NUMBERS]
        n_struct = batch[keys.N_ATOMS].shape[0]
        edge_index, vectors = neighbor_list({**batch, keys.POSITIONS: positions}, self.cutoff)
        r = torch.linalg.vector_norm(vectors, dim=-1)
        rbf = self.rbf(r)
        envelope = polynomial_envelope(r, self.cutoff, self.cfg.envelope_p)

        # a plain gather: its backward is one index_add (no sort, no host sync on CUDA)
        x = self.embedding.weight.index_select(0, numbers)  # (n_atoms, F)
        for interaction in self.interactions:
            x = x + interaction(x, rbf, envelope, edge_index)
        atomic = self.readout_out(shifted_softplus(self.readout_hidden(x))).squeeze(-1)
        return self.energy_shift.network(atomic, batch[keys.BATCH], n_struct)
