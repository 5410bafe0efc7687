"""Evaluate a trained model on a dataset table: metrics.json (the plots: pilip.potential.plots).

Which rows count is decided by :mod:`pilip.rows` (stages ``TEST_ENERGY`` and
``TEST_FORCES``), so that no number is measured on data the model was fitted to.

Energies in eV (and meV/atom), forces in eV/A; ``metrics.json`` keys are stable (see
``METRIC_KEYS``) and null where a set is empty.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from ase.data import chemical_symbols
from torch import nn

from pilip import __version__, keys, units
from pilip.atomic_io import atomic_path
from pilip.errors import PilipError
from pilip.potential import recipes
from pilip.potential.calibration import committee_calibration
from pilip.potential.committee import ensemble_size, predict_with_spread
from pilip.potential.data import Structures, structures_from_arrays
from pilip.potential.forces import energy_and_forces, total_energy
from pilip.potential.metrics import energy_metrics, force_metrics, rmse
from pilip.potential.plots import (
    plot_calibration,
    plot_energy_parity,
    plot_force_parity,
    plot_learning_curve,
    plot_untrained,
)
from pilip.rows import SELECT, TEST_ENERGY, TEST_FORCES, RowFlags, stage_rows
from pilip.tables import field_unit, read_table, rows_of, table_provenance

METRICS_FILE = "metrics.json"
PARITY_ENERGY_FILE = "parity_energy.png"
PARITY_FORCES_FILE = "parity_forces.png"
LEARNING_CURVE_FILE = "learning_curve.png"
CALIBRATION_FILE = "calibration.png"  # committees only

# Keys every metrics.json has (values null where the set is empty); the report relies on them.
METRIC_KEYS = (
    "energy_rmse",
    "energy_mae",
    "energy_rmse_mev_per_atom",
    "energy_mae_mev_per_atom",
    "force_rmse",
    "force_mae",
    "force_rmse_per_element",
    "force_mae_per_element",
    "n_energy",
    "n_force_structures",
    "n_force_components",
    "units",
)
UNITS = {
    "energy_rmse": units.ENERGY,
    "energy_mae": units.ENERGY,
    "energy_rmse_mev_per_atom": "meV/atom",
    "energy_mae_mev_per_atom": "meV/atom",
    "energy_rmse_per_system": units.ENERGY,
    "force_rmse": units.FORCE,
    "force_mae": units.FORCE,
    "force_rmse_per_element": units.FORCE,
    "force_mae_per_element": units.FORCE,
    "train_time_s": "s",
}


@dataclass
class LabelledSet:
    """Structures with labels plus, per structure, the system name and reference."""

    structures: Structures  # energies (n,) eV or forces (n_atoms, 3) eV/A attached
    system: list[str]
    reference: list[str]


@dataclass
class EvaluationSets:
    energy: LabelledSet  # test split, not force_validation, with energies
    forces: LabelledSet  # rows with forces: force_validation rows or test split
    val: LabelledSet  # validation split with energies: a committee's spread is scaled on them


def _column_or(table: pa.Table, name: str, default: object) -> list:
    if name in table.column_names:
        return table.column(name).to_pylist()
    return [default] * table.num_rows


def read_evaluation_sets(path: str | Path) -> EvaluationSets:
    """Read a dataset table and select the energy and force evaluation rows (see module doc)."""
    path = Path(path)
    table = read_table(path, kind="dataset")
    required = (keys.NUMBERS, keys.POSITIONS, keys.ENERGY, keys.SPLIT)
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise PilipError(
            f"{path}: missing column(s) {', '.join(missing)}; re-create it with collect"
        )
    for column, unit in ((keys.ENERGY, units.ENERGY), (keys.FORCES, units.FORCE)):
        found = field_unit(table, column) if column in table.column_names else unit
        if found not in (None, unit):
            raise PilipError(f"{path}: column '{column}' is in {found}; pilip expects {unit}")
    fv = np.asarray(_column_or(table, keys.FORCE_VALIDATION, False), dtype=bool)
    if keys.FORCES in table.column_names:
        has_forces = table.column(keys.FORCES).is_valid().to_numpy(zero_copy_only=False)
    else:
        has_forces = np.zeros(table.num_rows, dtype=bool)
    reference = _column_or(table, keys.REFERENCE, "")
    flags = RowFlags(
        split=np.asarray(table.column(keys.SPLIT).to_pylist(), dtype=object),
        force_validation=fv,
        has_energy=table.column(keys.ENERGY).is_valid().to_numpy(zero_copy_only=False),
        has_forces=has_forces,
        reference=np.asarray(reference, dtype=object),
    )
    energy_rows = stage_rows(TEST_ENERGY, flags)
    force_rows = stage_rows(TEST_FORCES, flags)
    val_rows = stage_rows(SELECT, flags)
    val_rows = val_rows[flags.has_energy[val_rows]]
    if len(energy_rows) == 0 and len(force_rows) == 0:
        raise PilipError(
            f"{path}: nothing to evaluate: no test-split rows with energies and no rows with "
            "forces; give the splits a test fraction or add force_validation labels"
        )
    system = _column_or(table, keys.SYSTEM, "")
    # collect joins force-validation forces onto rows whose `reference` names the energies
    force_reference = table_provenance(table).get("force_validation_reference")
    return EvaluationSets(
        energy=_labelled(table, energy_rows, system, reference, forces=False),
        forces=_labelled(
            table,
            force_rows,
            system,
            [
                force_reference if f and force_reference else r
                for r, f in zip(reference, fv, strict=True)
            ],
            forces=True,
        ),
        val=_labelled(table, val_rows, system, reference, forces=False),
    )


def _labelled(
    table: pa.Table, rows: np.ndarray, system: list, reference: list, forces: bool
) -> LabelledSet:
    sub = table.take(pa.array(rows, type=pa.int64()))
    numbers = [np.asarray(z, dtype=np.int64) for z in sub.column(keys.NUMBERS).to_pylist()]
    positions = rows_of(sub.column(keys.POSITIONS)) if len(rows) else []
    if forces:
        force_rows = rows_of(sub.column(keys.FORCES)) if len(rows) else []
        structures = _from_arrays(numbers, positions, forces=force_rows)
    else:
        energy = np.array(
            pc.cast(sub.column(keys.ENERGY), pa.float64()).to_numpy(zero_copy_only=False)
        )
        structures = _from_arrays(numbers, positions, energy=energy)
    return LabelledSet(
        structures=structures,
        system=[system[i] for i in rows],
        reference=[reference[i] for i in rows],
    )


def _from_arrays(numbers, positions, energy=None, forces=None) -> Structures:
    if numbers:
        return structures_from_arrays(numbers, positions, energy=energy, forces=forces)
    empty = Structures(
        numbers=torch.zeros(0, dtype=torch.long),
        positions=torch.zeros((0, 3), dtype=torch.float64),
        offsets=torch.zeros(1, dtype=torch.long),
    )
    return replace(
        empty,
        energy=torch.zeros(0, dtype=torch.float64) if forces is None else None,
        forces=torch.zeros((0, 3), dtype=torch.float64) if forces is not None else None,
    )


def check_elements(sets: EvaluationSets, elements: list[int] | None, dataset: Path) -> None:
    """PilipError when the dataset has elements the model was not trained on."""
    if not elements:
        return
    present = set(sets.energy.structures.elements()) | set(sets.forces.structures.elements())
    unknown = sorted(present - {int(z) for z in elements})
    if unknown:
        names = ", ".join(chemical_symbols[z] for z in unknown)
        raise PilipError(f"{dataset}: element(s) {names} unknown to the model; train on them first")


def predict(
    model: nn.Module,
    structures: Structures,
    device: torch.device,
    batch_size: int = 64,
    forces: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Model energies (n,) eV and, if ``forces``, forces (n_atoms_total, 3) eV/A, in order."""
    if len(structures) == 0:
        return np.zeros(0), (np.zeros((0, 3)) if forces else None)
    dtype = next(model.parameters()).dtype
    on_device = structures.to(device, dtype)
    energies, force_blocks = [], []
    for batch in on_device.batches(batch_size):
        if forces:
            energy, force = energy_and_forces(model, batch)
            force_blocks.append(force.detach().cpu().double().numpy())
        else:
            energy = total_energy(model, batch)
        energies.append(energy.detach().cpu().double().numpy())
    return np.concatenate(energies), (np.concatenate(force_blocks) if forces else None)


def predict_committee(
    model: nn.Module, structures: Structures, device: torch.device, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """A committee's mean and spread on ``structures``, in order (numpy, float64):
    ``energy``, ``energy_std`` (n,) eV, ``members`` (n_members, n) eV, ``forces``,
    ``forces_std`` (n_atoms_total, 3) eV/A and ``member_forces`` (n_members, n_atoms_total, 3)
    eV/A (pilip.potential.committee.predict_with_spread, batch by batch)."""
    names = ("energy", "energy_std", "members", "forces", "forces_std", "member_forces")
    if len(structures) == 0:
        m = ensemble_size(model)
        shapes = ((0,), (0,), (m, 0), (0, 3), (0, 3), (m, 0, 3))
        return {name: np.zeros(shape) for name, shape in zip(names, shapes, strict=True)}
    dtype = next(model.parameters()).dtype
    blocks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in structures.to(device, dtype).batches(batch_size):
        prediction = predict_with_spread(model, batch)
        for name in names:
            blocks[name].append(getattr(prediction, name).detach().cpu().double().numpy())
    axis = {"members": 1, "member_forces": 1}
    return {name: np.concatenate(blocks[name], axis=axis.get(name, 0)) for name in names}


def evaluate_model(
    model: nn.Module,
    sets: EvaluationSets,
    device: torch.device,
    batch_size: int = 64,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics (stable keys, see ``METRIC_KEYS``) and the predictions behind them.

    Predictions: ``energy_pred``/``energy_ref`` (n_energy,) eV, ``force_pred``/``force_ref``
    (n_atoms, 3) eV/A, ``force_numbers`` (n_atoms,). A committee is measured by its mean, and
    adds ``members`` (each member's ``energy_rmse`` and ``force_rmse``, in member order) and
    ``calibration`` (:func:`committee_metrics`) to the metrics, ``energy_std`` and
    ``forces_std`` to the predictions.
    """
    e_set, f_set = sets.energy.structures, sets.forces.structures
    committee = ensemble_size(model) > 1
    if committee:
        energy_run = predict_committee(model, e_set, device, batch_size)
        force_run = predict_committee(model, f_set, device, batch_size)
        energy_pred, force_pred = energy_run["energy"], force_run["forces"]
    else:
        energy_pred, _ = predict(model, e_set, device, batch_size)
        _, force_pred = predict(model, f_set, device, batch_size, forces=True)
    energy_ref = e_set.energy.numpy()
    n_atoms = e_set.n_atoms.numpy()
    metrics: dict[str, Any] = {}
    metrics.update(energy_metrics(energy_pred, energy_ref, n_atoms))
    metrics.update(
        force_metrics(force_pred, f_set.forces.numpy(), f_set.numbers.numpy(), len(f_set))
    )
    systems = np.asarray(sets.energy.system, dtype=object)
    metrics["energy_rmse_per_system"] = {
        str(s): rmse(energy_pred[systems == s] - energy_ref[systems == s])
        for s in sorted(set(sets.energy.system))
    }
    metrics["energy_reference"] = sorted(set(sets.energy.reference))
    metrics["force_reference"] = sorted(set(sets.forces.reference))
    predictions = {
        "energy_pred": energy_pred,
        "energy_ref": energy_ref,
        "energy_system": systems,
        "force_pred": force_pred,
        "force_ref": f_set.forces.numpy(),
        "force_numbers": f_set.numbers.numpy(),
    }
    if committee:
        val_run = predict_committee(model, sets.val.structures, device, batch_size)
        metrics.update(
            committee_metrics(
                energy_run, energy_ref, force_run, predictions["force_ref"],
                val_run, sets.val.structures.energy.numpy(),
            )
        )  # fmt: skip
        predictions["energy_std"] = energy_run["energy_std"]
        predictions["forces_std"] = force_run["forces_std"]
    return metrics, predictions


def committee_metrics(
    energy_run: dict[str, np.ndarray],
    energy_ref: np.ndarray,
    force_run: dict[str, np.ndarray],
    force_ref: np.ndarray,
    val_run: dict[str, np.ndarray],
    val_ref: np.ndarray,
) -> dict[str, Any]:
    """``members``: every member's test ``energy_rmse`` (eV) and ``force_rmse`` (eV/A), alone;
    ``calibration``: the spread against the error of the mean
    (pilip.potential.calibration.committee_calibration: one scale factor fitted on the
    validation energies, then Spearman, miscalibration area and NLL of the test energies and
    of the force components). Runs from :func:`predict_committee`; references in eV, eV/A."""

    def member_rmse(values: np.ndarray, reference: np.ndarray) -> list[float | None]:
        return [rmse(v - reference) if reference.size else None for v in values]

    return {
        "members": {
            "energy_rmse": member_rmse(energy_run["members"], energy_ref),
            "force_rmse": member_rmse(force_run["member_forces"], force_ref),
        },
        "calibration": committee_calibration(
            val=(val_run["energy_std"], val_run["energy"] - val_ref),
            test_energy=(energy_run["energy_std"], energy_run["energy"] - energy_ref),
            test_forces=(force_run["forces_std"], force_run["forces"] - force_ref),
        ),
    }


def energy_errors(predictions: dict[str, np.ndarray]) -> np.ndarray:
    """(n_energy,) eV: predicted minus reference test energies."""
    return predictions["energy_pred"] - predictions["energy_ref"]


# --- the whole evaluation --------------------------------------------------------------------


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: replace non-finite floats (also nested) by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def training_summary(meta: dict[str, Any], log_path: Path | None) -> dict[str, Any]:
    """What the report shows about training: model, losses, weights, epochs, wall time (s).

    From the checkpoint ``meta`` (written by ``pilip train``) and, for the wall time and the
    epoch count, the last row of the training log (a committee's: member 0's epochs, the wall
    time of all members).
    """
    config = meta.get("config") or {}
    losses = config.get("losses")
    weights = {name: config.get(f"w_{name}") for name in losses or []}
    summary: dict[str, Any] = {
        "model_name": meta.get("model"),
        "losses": losses,
        "loss_weights": weights,
        "weak_eps": config.get("eps"),
        "weak_k": config.get("k"),
        "n_train": meta.get("n_train"),
        "n_unlabelled": meta.get("n_unlabelled"),
        "best_epoch": meta.get("best_epoch"),
        "epochs": None,
        "train_time_s": None,
        "recipe": recipes.describe(meta),
        "recipes": recipes.recipe_records(meta),
    }
    if log_path is not None:
        import pandas as pd

        log = pd.read_csv(log_path)
        if len(log):
            if "epoch" in log.columns:
                summary["epochs"] = int(log["epoch"].iloc[-1])
            if "wall_time_s" in log.columns:
                summary["train_time_s"] = float(log["wall_time_s"].iloc[-1])
    members = [m.get("train_time_s") for m in meta.get("members") or []]
    if members and None not in members:  # a committee's log is member 0's: the cost of all
        summary["train_time_s"] = float(sum(members))
    return summary


def reference_mismatch(trained_on: list[str] | None, evaluated: list[str]) -> str:
    """Why the test energies (of references ``evaluated``) do not measure a model trained on
    ``trained_on`` energies, or "" (also when the checkpoint does not say)."""
    other = sorted(set(evaluated) - set(trained_on or evaluated))
    if not other:
        return ""
    return (
        f"test energies of reference {', '.join(other)} but the model was trained on "
        f"{', '.join(trained_on)}; the energy errors compare different references"
    )


def write_evaluation(
    model: nn.Module,
    meta: dict[str, Any],
    dataset: str | Path,
    out_dir: str | Path,
    *,
    device: torch.device,
    model_path: str | Path | None = None,
    training_log: str | Path | None = None,
    batch_size: int = 64,
    title: str = "",
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate, then write ``out_dir``/metrics.json and the PNG plots; returns the metrics.

    ``training_log`` (a training ``metrics.csv``) gives the learning curves; without it the
    learning-curve file says that there is none (every evaluated run has the same files) and
    ``plots.learning_curve_trained`` is false. A committee is evaluated by its mean;
    ``ensemble`` in metrics.json is its member count (1: a single model). metrics.json is
    written last, so its presence means the evaluation finished. ``warn`` gets one line when
    the test energies are of another reference than the model's training energies
    (``model_reference`` in metrics.json, from the checkpoint).
    """
    dataset, out_dir = Path(dataset), Path(out_dir)
    log_path = Path(training_log) if training_log is not None else None
    if log_path is not None and not log_path.is_file():
        raise PilipError(f"{log_path}: no such training log; pass the run's metrics.csv")
    sets = read_evaluation_sets(dataset)
    check_elements(sets, meta.get("elements"), dataset)
    model = model.to(device).eval()
    metrics, predictions = evaluate_model(model, sets, device, batch_size)
    metrics["model_reference"] = meta.get("reference")
    mismatch = reference_mismatch(meta.get("reference"), metrics["energy_reference"])
    if mismatch and warn is not None:
        warn(f"{dataset}: {mismatch}")

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"parity_energy": PARITY_ENERGY_FILE, "parity_forces": PARITY_FORCES_FILE}
    plot_energy_parity(predictions, out_dir / PARITY_ENERGY_FILE, title and f"{title}: energies")
    plot_force_parity(predictions, out_dir / PARITY_FORCES_FILE, title and f"{title}: forces")
    if "calibration" in metrics:
        plot_calibration(
            out_dir / CALIBRATION_FILE,
            {
                "test energies (eV)": (predictions["energy_std"], energy_errors(predictions)),
                "force components (eV/A)": (
                    predictions["forces_std"], predictions["force_pred"] - predictions["force_ref"]
                ),
            },
            title and f"{title}: committee spread",
        )  # fmt: skip
        plots["calibration"] = CALIBRATION_FILE
    plots["learning_curve"] = LEARNING_CURVE_FILE
    plots["learning_curve_trained"] = log_path is not None
    if log_path is not None:
        plot_learning_curve(log_path, out_dir / LEARNING_CURVE_FILE, title)
    else:
        plot_untrained(out_dir / LEARNING_CURVE_FILE, recipes.describe(meta), title)

    metrics["units"] = UNITS
    metrics.update(training_summary(meta, log_path))
    metrics["ensemble"] = ensemble_size(model)  # committee members (1: a single model)
    metrics.update(
        model=None if model_path is None else str(model_path),
        dataset=str(dataset),
        device=str(device),
        plots=plots,
        pilip_version=__version__,
    )
    metrics = _finite_or_none(metrics)
    with atomic_path(out_dir / METRICS_FILE) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
