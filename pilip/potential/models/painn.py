"""PaiNN (Schuett, Unke, Gastegger, ICML 2021): equivariant message passing with scalar and
vector features.

model(batch) -> per-structure energies (n_struct,) in eV, per-element shifts included
(``ShiftedEnergyModel``: the shifts are summed apart, in float64). The
neighbour list is built inside ``forward`` from the positions; forces come from
``pilip.potential.forces.energy_and_forces``. Scalars ``s`` are (n_atoms, F); vectors ``v`` are
(n_atoms, 3, F) and rotate with the structure, so the energy (read from ``s``) is invariant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from pilip import keys
from pilip.potential.models.common import (
    EnergyShift,
    ShiftedEnergyModel,
    SineRBF,
    polynomial_envelope,
)
from pilip.potential.neighbors import neighbor_list, segment_sum


@dataclass
class PaiNNConfig:
    cutoff: float = 5.0  # Angstrom
    n_features: int = 128  # F: width of scalar and vector features
    n_rbf: int = 20  # sin(n pi r / cutoff) / r basis functions
    n_interactions: int = 3  # message + update blocks
    envelope_p: int = 5  # polynomial cutoff envelope order (C2 at the cutoff for p >= 3)
    max_z: int = 118  # largest atomic number embedded
    dtype: str = "float32"  # or "float64"


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


class Message(nn.Module):
    """Each atom gathers scalar and vector messages from its neighbours (equations 7-8)."""

    def __init__(self, cfg: PaiNNConfig) -> None:
        super().__init__()
        f = cfg.n_features
        self.n_features = f
        self.phi = _mlp(f, f, 3 * f)

    def forward(
        self,
        s: Tensor,
        v: Tensor | None,
        filters: Tensor,
        unit: Tensor,
        edge_index: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Updates ds (n_atoms, F) and dv (n_atoms, 3, F); ``filters`` (n_edges, 3F) are this
        block's distance filters W(r_ij) u(r_ij); v None means all zero."""
        receiver, sender = edge_index
        # index_select, not x[sender]: its backward is one index_add, not a sort-based put
        x = self.phi(s).index_select(0, sender) * filters  # (n_edges, 3F)
        x_vv, x_s, x_vs = torch.split(x, self.n_features, dim=-1)
        ds = segment_sum(x_s, receiver, s.shape[0])
        dv_edge = x_vs[:, None, :] * unit[:, :, None]  # (n_edges, 3, F)
        if v is not None:
            dv_edge = dv_edge + x_vv[:, None, :] * v.index_select(0, sender)
        dv = segment_sum(dv_edge, receiver, s.shape[0])
        return ds, dv


class Update(nn.Module):
    """Each atom mixes its own scalar and vector channels (equations 9-11)."""

    def __init__(self, cfg: PaiNNConfig) -> None:
        super().__init__()
        f = cfg.n_features
        self.n_features = f
        self.uv = nn.Linear(f, 2 * f, bias=False)  # U and V stacked: one matmul
        self.mlp = _mlp(2 * f, f, 3 * f)

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        u_v, v_v = torch.split(self.uv(v), self.n_features, dim=-1)  # (n_atoms, 3, F) each
        # the epsilon keeps the norm's first and second derivatives finite at v = 0
        norm = torch.sqrt((v_v * v_v).sum(dim=1) + 1e-8)
        a_vv, a_sv, a_ss = torch.split(self.mlp(torch.cat([s, norm], dim=-1)), self.n_features, -1)
        dv = a_vv[:, None, :] * u_v
        ds = a_sv * (u_v * v_v).sum(dim=1) + a_ss
        return ds, dv


class PaiNN(ShiftedEnergyModel):
    def __init__(self, cfg: PaiNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cutoff = cfg.cutoff
        self.embedding = nn.Embedding(cfg.max_z + 1, cfg.n_features)
        self.rbf = SineRBF(cfg.n_rbf, cfg.cutoff)
        # the distance filters of all blocks in one matmul (fewer kernels; same model)
        self.filters = nn.Linear(cfg.n_rbf, cfg.n_interactions * 3 * cfg.n_features)
        self.messages = nn.ModuleList(Message(cfg) for _ in range(cfg.n_interactions))
        self.updates = nn.ModuleList(Update(cfg) for _ in range(cfg.n_interactions))
        self.readout = _mlp(cfg.n_features, cfg.n_features // 2, 1)
        self.energy_shift = EnergyShift()
        self.to(getattr(torch, cfg.dtype))

    def hparams(self) -> dict:
        return asdict(self.cfg)

    def network_energy(self, batch: dict[str, Tensor]) -> Tensor:
        """Energies (n_struct,) eV without the per-element reference (positions in A)."""
        dtype = self.embedding.weight.dtype
        positions = batch[keys.POSITIONS].to(dtype)
        numbers = batch[keys.NUMBERS]
        n_struct = batch[keys.N_ATOMS].shape[0]
        edge_index, vectors = neighbor_list({**batch, keys.POSITIONS: positions}, self.cutoff)
        r = torch.linalg.vector_norm(vectors, dim=-1)
        unit = vectors / r[:, None]
        envelope = polynomial_envelope(r, self.cutoff, self.cfg.envelope_p)
        filters = self.filters(self.rbf(r)) * envelope[:, None]  # (n_edges, n_blocks * 3F)
        filters = torch.split(filters, 3 * self.cfg.n_features, dim=-1)

        # a plain gather: its backward is one index_add (no sort, no host sync on CUDA)
        s = self.embedding.weight.index_select(0, numbers)  # (n_atoms, F)
        v = None  # vector features start at zero
        for message, update, w in zip(self.messages, self.updates, filters, strict=True):
            ds, dv = message(s, v, w, unit, edge_index)
            s = s + ds
            v = dv if v is None else v + dv
            ds, dv = update(s, v)
            s = s + ds
            v = v + dv
        atomic = self.readout(s).squeeze(-1)
        return self.energy_shift.network(atomic, batch[keys.BATCH], n_struct)
