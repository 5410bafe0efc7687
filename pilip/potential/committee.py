"""Committees: N models of one architecture that differ only in their training seed.

``pilip train --ensemble N`` trains them (pilip.potential.committee_training) and writes one
checkpoint; :func:`pilip.potential.checkpoint.load_model` gives back a :class:`Committee`
(wrapped by the recipes as any network: a Delta committee is baseline + committee), whose
energy is the members' MEAN, so ``pilip evaluate``, ``pilip md`` and the ASE calculator use
the mean with no flag. The members' disagreement measures how far a prediction can be trusted:
:func:`predict_with_spread` gives the mean energy and forces with their standard deviation
over the members (what ``PilipCalculator`` reports as ``energy_std`` and ``forces_std``).

A committee checkpoint (format 3, pilip.potential.checkpoint) holds every member's network::

    model  {"name": str, "hparams": {...},
            "members": [{"name": str, "hparams": {...}, "state_dict": {...}}, ...]}
    meta   {... as a single model's, "config": the run's (seed, ensemble N),
            "val_energy_rmse": eV of the committee mean,
            "members": [{"seed", "best_epoch", "val_energy_rmse", "recipes"}, ...]}

Loading refuses one whose members differ in architecture, hyper-parameters or recipe records
(a Delta committee's members share one baseline): :func:`committee_problem`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pilip import keys
from pilip.potential.forces import energy_and_forces, energy_parts
from pilip.potential.models.common import EnergyShift, ShiftedEnergyModel

MEMBERS = "members"  # the key of the members in a checkpoint's ``model`` and ``meta``


class Committee(ShiftedEnergyModel):
    """The mean of ``members`` (energy models from a batch dict to (n_structures,) eV).

    Like every pilip model its energy is a network part (the members' mean, in their dtype)
    plus a float64 reference part (the mean of the members' per-element shifts: pilip fits
    them on the same training energies, so they are the same numbers).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a committee needs at least one member")
        self.members = nn.ModuleList(members)
        self.cutoff = float(getattr(members[0], "cutoff", 0.0))

    @property
    def energy_shift(self) -> EnergyShift:
        """Member 0's per-element shifts (reports and wrappers read them; the energy uses the
        mean of every member's, :meth:`reference_energy`)."""
        return self.members[0].energy_shift

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """(n_structures,) mean energy of the members, eV, in their dtype (positions in A)."""
        return super().forward(batch)

    def hparams(self) -> dict[str, Any]:
        """The members' hyper-parameters (one architecture)."""
        return self.members[0].hparams()

    def network_energy(self, batch: dict[str, Tensor]) -> Tensor:
        """(n_structures,) mean of the members' network parts, in their dtype, eV."""
        return torch.stack([energy_parts(m)[0](batch) for m in self.members]).mean(0)

    def reference_energy(self, batch: dict[str, Tensor]) -> Tensor:
        """(n_structures,) float64 mean of the members' reference parts, eV."""
        return torch.stack([_reference(m, batch) for m in self.members]).mean(0)

    def member_energies(self, batch: dict[str, Tensor]) -> Tensor:
        """(n_members, n_structures) float64 energies of every member, eV (differentiable)."""
        rows = []
        for member in self.members:
            network, _ = energy_parts(member)
            rows.append(network(batch).double() + _reference(member, batch))
        return torch.stack(rows)


def _reference(member: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """(n_structures,) float64 reference part of one member (zeros for a plain energy model)."""
    _, reference = energy_parts(member)
    if reference is not None:
        return reference(batch).double()
    n_atoms = batch[keys.N_ATOMS]
    return torch.zeros(n_atoms.shape[0], dtype=torch.float64, device=n_atoms.device)


def committee_of(model: nn.Module) -> Committee | None:
    """The committee inside a potential (the network a recipe wraps: ``DeltaModel.model``, or
    the model itself), None for a single model."""
    while isinstance(model, nn.Module):
        if isinstance(model, Committee):
            return model
        model = getattr(model, "model", None)
    return None


def ensemble_size(model: nn.Module) -> int:
    """Members of the potential's committee (1 for a single model)."""
    committee = committee_of(model)
    return 1 if committee is None else len(committee.members)


@dataclass
class Prediction:
    """Energies and forces of a potential, with the committee's spread (detached tensors).

    ``energy`` (n_structures,) float64 eV and ``forces`` (n_atoms, 3) eV/A are the committee
    mean (forces = -grad of the mean energy), with a Delta baseline included. ``energy_std``
    (n_structures,) eV and ``forces_std`` (n_atoms, 3) eV/A are the population standard
    deviations (ddof 0) over the members, per component; a baseline, common to all members,
    adds none. ``members`` (n_members, n_structures) eV and ``member_forces`` (n_members,
    n_atoms, 3) eV/A are every member's potential (baseline included). The last four are None
    for a single model.
    """

    energy: Tensor
    forces: Tensor
    energy_std: Tensor | None = None
    forces_std: Tensor | None = None
    members: Tensor | None = None
    member_forces: Tensor | None = None


def predict_with_spread(model: nn.Module, batch: dict[str, Tensor]) -> Prediction:
    """The potential's energies and forces on ``batch`` (positions in A), with the spread of
    its committee (:class:`Prediction`). Costs one forward and one backward pass per member,
    as the mean alone does; a baseline is computed once."""
    committee = committee_of(model)
    if committee is None:
        energy, forces = energy_and_forces(model, batch)
        return Prediction(energy.detach(), forces.detach())
    members, member_forces = _member_potentials(model, committee, batch)
    return Prediction(
        energy=members.mean(0),
        forces=member_forces.mean(0),
        energy_std=members.std(0, correction=0),
        forces_std=member_forces.std(0, correction=0),
        members=members,
        member_forces=member_forces,
    )


def _member_potentials(
    model: nn.Module, committee: Committee, batch: dict[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """(n_members, n_structures) float64 energies and (n_members, n_atoms, 3) forces of the
    potential ``model`` with each member of ``committee`` alone in the committee's place."""
    added = _added_terms(model, committee, batch)
    energies, forces = [], []
    for index in range(len(committee.members)):
        if added is None:  # a wrapper that is not a sum: the whole potential, member by member
            with _only_member(committee, index):
                energy, force = energy_and_forces(model, batch)
        else:
            energy, force = energy_and_forces(committee.members[index], batch)
            energy, force = energy + added[0], force + added[1]
        energies.append(energy.detach().double())
        forces.append(force.detach())
    return torch.stack(energies), torch.stack(forces)


def _added_terms(
    model: nn.Module, committee: Committee, batch: dict[str, Tensor]
) -> tuple[Tensor | float, Tensor | float] | None:
    """(energy eV, forces eV/A) that the recipes around ``committee`` add to it, the same for
    every member (a Delta baseline: ``baseline_values``), or None when a wrapper is not a sum."""
    if model is committee:
        return 0.0, 0.0
    inner = getattr(model, "model", None)
    if not isinstance(inner, nn.Module) or not hasattr(model, "baseline_values"):
        return None
    within = _added_terms(inner, committee, batch)
    if within is None:
        return None
    energy, forces = model.baseline_values(batch)
    return energy.double() + within[0], forces + within[1]


@contextlib.contextmanager
def _only_member(committee: Committee, index: int) -> Iterator[None]:
    everyone = committee.members
    committee.members = nn.ModuleList([everyone[index]])
    try:
        yield
    finally:
        committee.members = everyone


# --- checkpoints -------------------------------------------------------------------------------


def committee_problem(payload: dict[str, Any]) -> str:
    """Why the checkpoint dict ``payload`` (a committee's) does not hold one committee:
    members of another architecture, other hyper-parameters or other recipe records (e.g.
    another baseline) than member 0; "" when it does."""
    from pilip.potential.recipes import describe

    spec = payload["model"]
    members = spec.get(MEMBERS) or []
    if not members:
        return "a committee checkpoint without members"
    for k, member in enumerate(members):
        if member.get("name") != spec["name"]:
            return (
                f"committee member {k} is a {member.get('name')} model, the committee "
                f"{spec['name']}; every member must have one architecture"
            )
        if member.get("hparams") != spec["hparams"]:
            keys = sorted(
                key
                for key in set(member.get("hparams") or {}) | set(spec["hparams"])
                if (member.get("hparams") or {}).get(key) != spec["hparams"].get(key)
            )
            return (
                f"committee member {k} has other hyper-parameters ({', '.join(keys)}) than the "
                "committee; every member must have the same"
            )
    records = payload["meta"].get("recipes")
    for k, info in enumerate(payload["meta"].get(MEMBERS) or []):
        if records is not None and info.get("recipes", records) != records:
            return (
                f"committee member {k} was trained as {describe({'recipes': info['recipes']})} "
                f"but the committee as {describe({'recipes': records})}; every member must "
                "share the recipe (a Delta committee one baseline)"
            )
    return ""


def committee_from_checkpoint(
    payload: dict[str, Any], device: str | torch.device, source: str
) -> Committee:
    """The :class:`Committee` of a committee checkpoint dict (on ``device``); one-line
    PilipError (naming ``source``) for members that do not form one committee."""
    from pilip.errors import PilipError
    from pilip.potential.models import build_model

    problem = committee_problem(payload)
    if problem:
        raise PilipError(f"{source}: {problem}; retrain it with `pilip train --ensemble N`")
    members = []
    for k, spec in enumerate(payload["model"][MEMBERS]):
        member = build_model(spec["name"], **spec["hparams"])
        try:
            member.load_state_dict(spec["state_dict"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise PilipError(
                f"{source}: committee member {k}'s weights do not fit its architecture "
                f"({first}); retrain it with `pilip train --ensemble N`"
            ) from None
        members.append(member)
    return Committee(members).to(device)


def committee_payload(payloads: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict of the committee of the single-model checkpoint dicts ``payloads``
    (each member's ``model.pt``), with ``meta``; per-member meta (seed, best epoch,
    validation RMSE, recipes) is added under ``meta["members"]``."""
    from pilip.potential.checkpoint import FORMAT_VERSION

    first = payloads[0]["model"]
    members = [
        {"name": p["model"]["name"], "hparams": p["model"]["hparams"],
         "state_dict": p["model"]["state_dict"]}
        for p in payloads
    ]  # fmt: skip
    meta = dict(meta)
    meta[MEMBERS] = [
        {
            "seed": p["meta"].get("config", {}).get("seed"),
            "best_epoch": p["meta"].get("best_epoch"),
            "val_energy_rmse": p["meta"].get("val_energy_rmse"),
            "recipes": p["meta"].get("recipes"),
        }
        for p in payloads
    ]
    return {
        "format_version": FORMAT_VERSION,
        "model": {"name": first["name"], "hparams": first["hparams"], MEMBERS: members},
        "meta": meta,
    }
