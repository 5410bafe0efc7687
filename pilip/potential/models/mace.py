"""MACE (Batatia et al., NeurIPS 2022): higher-body-order equivariant message passing, the
network of mace-torch (``mace.modules.ScaleShiftMACE``) inside pilip's model contract.

model(batch) -> per-structure energies (n_struct,) in eV, per-element shifts included
(``ShiftedEnergyModel``: pilip's ``EnergyShift`` owns the per-element energies and the output
scale; the MACE inside has zero atomic energies, scale 1 and shift 0). The neighbour list is
pilip's (``pilip.potential.neighbors``, built inside ``forward``); forces come from
``pilip.potential.forces.energy_and_forces`` (MACE's own force output is never asked for).
``to_mace`` gives a standalone mace-torch model with the shifts and the scale folded in, the
file ``pilip export-model --format mace`` writes.

Needs the ``mace`` extra (``pip install pilip[mace]``: mace-torch, e3nn).

Defaults, for small molecules on a few CPU cores (acac, ethanol: 9-15 atoms, 100-1000
structures): 32 channels of scalars and vectors (``32x0e+32x1o``), 2 interactions,
correlation 2 (each product is up to 3-body; with 2 interactions the energy reaches 5-body
and beyond), spherical harmonics to l = 3, 8 Bessel functions and a 5 A cutoff (the whole
molecule in one hop, as PaiNN's default). That is the size the planner measured on ethanol
(0.046 eV/A force RMSE from 100 energies+forces in 10 CPU minutes); mace-torch's own default
(128 channels, correlation 3) costs 9-10x more per step on a CPU (``benchmarks/README.md``).
Train it with ``--lr 1e-2``: at pilip's default lr it learns forces several times more
slowly per epoch. ``elements`` (the one-hot of the node attributes) and
``avg_num_neighbors`` (the message normalisation) come from the training data when unset
(``data_defaults``, through ``pilip.potential.models.data_hparams``) and are recorded with
the other hyper-parameters.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pilip import keys
from pilip.errors import PilipError
from pilip.potential.models.common import N_ELEMENTS, EnergyShift, ShiftedEnergyModel
from pilip.potential.neighbors import edge_vectors, neighbor_list

# elements of a model built without training data (H, C, N, O); pilip train uses the data's
DEFAULT_ELEMENTS = (1, 6, 7, 8)
DEFAULT_AVG_NEIGHBORS = 10.0  # ~ a 12-atom molecule inside a 5 A cutoff


@dataclass
class MACEConfig:
    cutoff: float = 5.0  # Angstrom (r_max)
    n_features: int = 32  # channels of each irrep (num_channels)
    max_L: int = 1  # hidden irreps n_features x (0e + 1o + ... up to L)
    max_ell: int = 3  # spherical harmonics of the edge directions up to l = max_ell
    correlation: int = 2  # body order of each product: correlation + 1
    n_interactions: int = 2  # interaction + product blocks
    n_rbf: int = 8  # Bessel functions of the distance (num_bessel)
    envelope_p: int = 5  # polynomial cutoff order (num_polynomial_cutoff), C2 for p >= 3
    radial_mlp: list[int] = field(default_factory=lambda: [64, 64, 64])  # radial network widths
    readout_mlp: int = 16  # hidden scalars of the last readout (MLP_irreps)
    # atomic numbers the model embeds; empty: the training data's (else H, C, N, O)
    elements: list[int] = field(default_factory=list)
    avg_num_neighbors: float = 0.0  # message normalisation; 0: the training data's mean
    dtype: str = "float32"  # or "float64"


@contextlib.contextmanager
def _building(script: bool = False):
    """How mace modules are built here: in float64 (mace makes its constant tensors, the
    Clebsch-Gordan coefficients, in the default dtype: a float64 model gets them exact),
    without TorchScript warnings, and with e3nn's generated code left as Python unless
    ``script`` (scripting it takes ~1 s per model and runs no faster here; mace-torch's own
    tools script their models, so the exported one is built scripted)."""
    import e3nn

    dtype = torch.get_default_dtype()
    script_fx = e3nn.get_optimization_defaults()["jit_script_fx"]
    torch.set_default_dtype(torch.float64)
    e3nn.set_optimization_defaults(jit_script_fx=script)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The TorchScript type system", UserWarning)
            warnings.filterwarnings("ignore", ".torch.jit.script. is deprecated")
            yield
    finally:
        torch.set_default_dtype(dtype)
        e3nn.set_optimization_defaults(jit_script_fx=script_fx)


def import_mace() -> Any:
    """``mace.modules``, or a one-line PilipError naming the extra to install.

    Importing mace sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` for the whole process (every
    later ``torch.load`` without ``weights_only`` would unpickle code) and prints a line about
    cuEquivariance to stdout; both are undone here.
    """
    previous = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Environment variable TORCH_FORCE", UserWarning)
            from mace import modules
    except ImportError as exc:
        raise PilipError(
            f"--model mace needs mace-torch ({exc}); pip install 'pilip[mace]'"
        ) from None
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = previous
    return modules


def mace_arguments(cfg: MACEConfig) -> dict[str, Any]:
    """Keyword arguments of ``mace.modules.ScaleShiftMACE`` for ``cfg`` (zero atomic
    energies, scale 1, shift 0), as mace-torch's ``mace_run_train`` passes them."""
    import numpy as np
    from e3nn import o3

    modules = import_mace()
    hidden = "+".join(f"{cfg.n_features}x{l}{'e' if l % 2 == 0 else 'o'}"
                      for l in range(cfg.max_L + 1))  # fmt: skip
    interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return {
        "r_max": float(cfg.cutoff),
        "num_bessel": cfg.n_rbf,
        "num_polynomial_cutoff": cfg.envelope_p,
        "max_ell": cfg.max_ell,
        "interaction_cls": interaction,
        "interaction_cls_first": interaction,
        "num_interactions": cfg.n_interactions,
        "num_elements": len(cfg.elements),
        "hidden_irreps": o3.Irreps(hidden),
        "MLP_irreps": o3.Irreps(f"{cfg.readout_mlp}x0e"),
        "atomic_energies": np.zeros(len(cfg.elements)),
        "avg_num_neighbors": float(cfg.avg_num_neighbors),
        "atomic_numbers": list(cfg.elements),
        "correlation": cfg.correlation,
        "gate": modules.gate_dict["silu"],
        "radial_MLP": list(cfg.radial_mlp),
        "atomic_inter_scale": 1.0,
        "atomic_inter_shift": 0.0,
    }


class MACE(ShiftedEnergyModel):
    def __init__(self, cfg: MACEConfig) -> None:
        super().__init__()
        elements = sorted({int(z) for z in (cfg.elements or DEFAULT_ELEMENTS)})
        if not all(1 <= z < N_ELEMENTS for z in elements):
            raise PilipError(f"MACE elements {elements}: atomic numbers must be 1..118")
        avg = float(cfg.avg_num_neighbors) or DEFAULT_AVG_NEIGHBORS
        cfg = MACEConfig(**{**asdict(cfg), "elements": elements, "avg_num_neighbors": avg})
        self.cfg = cfg
        self.cutoff = cfg.cutoff
        modules = import_mace()
        with _building():
            self.mace = modules.ScaleShiftMACE(**mace_arguments(cfg))
        # Z -> row of ``one_hot``: the element's one-hot; Z = 0 (static_shapes' padding atoms)
        # the zero row (no embedding, no energy); any other element -1 (refused in forward)
        index = torch.full((N_ELEMENTS,), -1, dtype=torch.long)
        index[torch.tensor(elements)] = torch.arange(len(elements))
        index[0] = len(elements)
        self.register_buffer("element_index", index, persistent=False)
        self.register_buffer("one_hot", torch.eye(len(elements) + 1)[:, :-1], persistent=False)
        self.energy_shift = EnergyShift()
        self.to(getattr(torch, cfg.dtype))

    def hparams(self) -> dict:
        return asdict(self.cfg)

    @classmethod
    def data_defaults(cls, params: dict[str, Any], numbers: Tensor, n_atoms: Tensor,
                      positions: Tensor) -> dict[str, Any]:  # fmt: skip
        """``elements`` and ``avg_num_neighbors`` of the training structures (concatenated
        ``numbers`` (n_atoms,), ``positions`` (n_atoms, 3) A, ``n_atoms`` (n_struct,)) for
        those not in ``params``."""
        out: dict[str, Any] = {}
        if not params.get("elements"):
            out["elements"] = sorted(int(z) for z in torch.unique(numbers).tolist())
        if not params.get("avg_num_neighbors"):
            cutoff = float(params.get("cutoff", MACEConfig.cutoff))
            batch = torch.repeat_interleave(torch.arange(n_atoms.shape[0]), n_atoms)
            graph = {keys.POSITIONS: positions.double(), keys.N_ATOMS: n_atoms,
                     keys.BATCH: batch}  # fmt: skip
            edge_index, _ = neighbor_list(graph, cutoff)
            out["avg_num_neighbors"] = round(edge_index.shape[1] / max(int(numbers.shape[0]), 1), 4)
            out["avg_num_neighbors"] = out["avg_num_neighbors"] or DEFAULT_AVG_NEIGHBORS
        return out

    def mace_inputs(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """pilip's batch -> mace-torch's data dict (positions in the model's dtype)."""
        dtype = self.energy_shift.scale.dtype
        positions = batch[keys.POSITIONS].to(dtype)
        numbers = batch[keys.NUMBERS]
        row = self.element_index.index_select(0, numbers)
        # a host sync: not with precomputed pairs (static shapes, CUDA graphs), whose batches
        # come from training data of known elements
        if keys.EDGE_INDEX not in batch and bool((row < 0).any()):
            unknown = sorted(set(numbers[row < 0].tolist()))
            raise PilipError(
                f"element(s) {unknown} are not among this MACE model's elements "
                f"{self.cfg.elements}; train on data with them"
            )
        one_hot = self.one_hot.index_select(0, row).to(dtype)
        edge_index, vectors = neighbor_list({**batch, keys.POSITIONS: positions}, self.cutoff)
        # pilip's [receiver i, sender j], vector r_j - r_i is mace's [sender, receiver] with
        # vector r_receiver - r_sender: the same (symmetric) graph. The periodic image part of
        # the vectors becomes mace's ``shifts`` (zero for molecules).
        if keys.CELL in batch and keys.PBC in batch and bool(batch[keys.PBC].any()):
            shifts = vectors - edge_vectors(positions, edge_index)
            cell = batch[keys.CELL].to(dtype)
        else:
            shifts = vectors.new_zeros(vectors.shape)
            cell = positions.new_zeros((batch[keys.N_ATOMS].shape[0], 3, 3))
        n_struct = batch[keys.N_ATOMS].shape[0]
        ptr = torch.zeros(n_struct + 1, dtype=torch.long, device=positions.device)
        ptr[1:] = torch.cumsum(batch[keys.N_ATOMS], 0)
        if not positions.requires_grad:  # mace marks its positions: never the caller's
            positions = positions.detach()
        return {
            "positions": positions,
            "node_attrs": one_hot,
            "edge_index": edge_index,
            "shifts": shifts,
            "unit_shifts": torch.zeros_like(shifts),
            "cell": cell,
            "batch": batch[keys.BATCH],
            "ptr": ptr,
        }

    def network_energy(self, batch: dict[str, Tensor]) -> Tensor:
        """Energies (n_struct,) eV without the per-element reference (positions in A)."""
        out = self.mace(self.mace_inputs(batch), training=self.training, compute_force=False)
        energy = out["interaction_energy"]  # (n_struct,): mace's e0 is zero here
        return self.energy_shift.scale.to(energy.dtype) * energy

    @torch.no_grad()
    def to_mace(self, dtype: str = "float64") -> nn.Module:
        """A standalone ``mace.modules.ScaleShiftMACE`` in ``dtype`` giving this model's
        total energies: the per-element shifts become its atomic energies, the output scale
        its scale (float64 by default: per-element energies of ~1e3 eV summed in float32
        lose the meV)."""
        modules = import_mace()
        with _building(script=True):
            exported = modules.ScaleShiftMACE(**mace_arguments(self.cfg))
        exported.load_state_dict(self.mace.state_dict())
        shift = self.energy_shift.shift.double()[torch.tensor(self.cfg.elements)]
        atomic = exported.atomic_energies_fn.atomic_energies
        atomic.copy_(shift.reshape(atomic.shape))
        exported.scale_shift.scale.fill_(float(self.energy_shift.scale))
        return exported.to(getattr(torch, dtype)).eval()
