"""Exporting pilip checkpoints to other programs' model files (``pilip export-model``).

``--format mace`` (:func:`export_mace`): a MACE checkpoint as mace-torch's own model file.

``--format torchscript`` (:func:`export_torchscript`): a plain pilip model as a TorchScript
file for MD engines that load one (openmm-torch).

``export_torchscript(checkpoint, numbers, path)`` writes a module that maps the positions
(n_atoms, 3) in nm of one molecule with the atoms ``numbers`` (in that order) to its energy ()
in kJ/mol: what openmm-torch's ``TorchForce`` calls, which takes the forces as the energy's
autograd gradient. The per-element reference energy (thousands of eV) is summed in float64 as
``pilip.potential.forces`` does, so a float32 model keeps its precision in the total.

Traced, not scripted: ``torch.jit.script`` does not compile pilip's models as written (the
first construct it stops at is the class annotation ``energy_shift: EnergyShift`` of
``ShiftedEnergyModel``; behind it, ``receiver, sender = edge_index`` in PaiNN's message block,
``{**batch, ...}`` in ``network_energy`` and the vesin import of the periodic neighbour list).
Given the molecule's candidate pairs once (all pairs, ``keys.EDGE_INDEX``), the forward pass
has no data-dependent shape and no Python branch on tensor values, so ``torch.jit.trace``
records it exactly for any positions; ``torch.export.export`` accepts the same module. The
trace fixes the atoms and the weights; it has no cell (molecules only) and no baseline: a
Delta model's baseline runs tblite in Python, so Delta models are refused (distill them).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from ase.data import chemical_symbols
from torch import Tensor, nn

from pilip import keys
from pilip.atomic_io import atomic_path
from pilip.errors import PilipError
from pilip.potential.models.common import ShiftedEnergyModel
from pilip.potential.neighbors import molecular_pairs
from pilip.units import EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM


class MoleculeEnergy(nn.Module):
    """positions (n_atoms, 3) nm -> energy () kJ/mol, float64, of one molecule of fixed atoms."""

    def __init__(self, model: ShiftedEnergyModel, numbers: Sequence[int]) -> None:
        super().__init__()
        self.model = model.eval()
        self.dtype = next(model.parameters()).dtype
        n = len(numbers)
        self.register_buffer("numbers", torch.as_tensor(list(numbers), dtype=torch.long))
        self.register_buffer("batch", torch.zeros(n, dtype=torch.long))
        self.register_buffer("n_atoms", torch.tensor([n], dtype=torch.long))
        # every ordered pair: the cutoff envelope gives the far ones exactly zero weight
        self.register_buffer("edge_index", molecular_pairs(self.n_atoms))
        with torch.no_grad():
            reference = model.reference_energy(self._batch(torch.zeros(n, 3)))
        self.register_buffer("reference", reference[0].double())  # eV, float64

    def _batch(self, positions: Tensor) -> dict[str, Tensor]:
        return {
            keys.NUMBERS: self.numbers,
            keys.POSITIONS: positions,
            keys.BATCH: self.batch,
            keys.N_ATOMS: self.n_atoms,
            keys.EDGE_INDEX: self.edge_index,
        }

    def forward(self, positions: Tensor) -> Tensor:
        angstrom = positions.to(self.dtype) * NM_TO_ANGSTROM
        energy = self.model.network_energy(self._batch(angstrom))[0].double() + self.reference
        return energy * EV_TO_KJ_PER_MOL


def molecule_energy(checkpoint: str | Path, numbers: Sequence[int]) -> MoleculeEnergy:
    """The eager module that ``export_torchscript`` traces (CPU); one-line PilipError for a
    Delta model or atoms of elements the model was not trained on."""
    from pilip.potential.checkpoint import load_model

    model, meta = load_model(checkpoint, "cpu")
    if hasattr(model, "baseline") or not isinstance(model, ShiftedEnergyModel):
        raise PilipError(
            f"{checkpoint}: a Delta model calls its baseline (tblite, Psi4 tables) in Python and "
            "cannot be compiled; distill it into a plain model with `pilip distill` and export "
            "that, or run it through the ASE calculator (docs/md_engines.md)"
        )
    unknown = sorted({int(z) for z in numbers} - {int(z) for z in meta.get("elements", numbers)})
    if unknown:
        names = ", ".join(chemical_symbols[z] for z in unknown)
        raise PilipError(f"{checkpoint}: the model was not trained on element(s) {names}")
    return MoleculeEnergy(model, numbers)


def export_torchscript(
    checkpoint: str | Path, numbers: Sequence[int], path: str | Path
) -> torch.jit.ScriptModule:
    """Write ``path``: the TorchScript module of ``checkpoint`` for the molecule ``numbers``.

    ``torch.jit.load(path)(positions)`` takes (n_atoms, 3) positions in nm (float32 or
    float64, atoms in the order of ``numbers``) and returns the energy () in kJ/mol (float64);
    ``openmmtorch.TorchForce(str(path))`` adds it to an OpenMM System. Returns the module.
    """
    module = molecule_energy(checkpoint, numbers)
    # any geometry without coinciding atoms: the recorded graph does not depend on it
    example = torch.arange(len(numbers), dtype=module.dtype)[:, None] * 0.15
    example = example * torch.tensor([1.0, 0.3, 0.1], dtype=module.dtype)
    with warnings.catch_warnings():
        # the only one: ``receiver, sender = edge_index`` iterates over a dimension that is 2
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, (example,))
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))
    return traced


def export_mace(checkpoint: str | Path, out: str | Path, dtype: str = "float64") -> Path:
    """Write the MACE of pilip ``checkpoint`` as mace-torch's pickled model to ``out``.

    The file holds a ``mace.modules.ScaleShiftMACE`` (``torch.save`` of the module, as
    mace-torch writes its own models) whose total energies and forces are pilip's. One-line
    PilipError for a checkpoint of another architecture, a committee, or one whose recipes
    wrap the network (Delta).
    """
    from pilip.potential.checkpoint import model_from_checkpoint, read_checkpoint
    from pilip.potential.recipes import recipe_class, recipe_records

    payload = read_checkpoint(checkpoint, "cpu")
    if "members" in payload["model"]:
        raise PilipError(
            f"{checkpoint} is a committee of {len(payload['model']['members'])} models "
            "(--ensemble), which mace-torch cannot hold as one model; export a member's own "
            "checkpoint (members/<k>/model.pt beside it in the run folder)"
        )
    name = payload["model"]["name"]
    if name != "mace":
        raise PilipError(
            f"{checkpoint} is a {name} model; --format mace exports MACE models only "
            "(train one with --model mace)"
        )
    for record in recipe_records(payload["meta"]):
        if recipe_class(record["name"]).wraps_inference:
            raise PilipError(
                f"{checkpoint} is a {record['name']} model (its network alone is not the "
                "potential) and cannot be exported standalone; distil it into a plain MACE "
                "(train on its predicted energies and forces) and export that"
            )
    model = model_from_checkpoint(payload, "cpu")
    exported = model.to_mace(dtype)
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(exported, tmp)
    return out
