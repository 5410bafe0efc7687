"""A committee's force spread along MD trajectories, and the frames it flags for labelling.

A committee model's calculator carries in its ``results``, beside the committee mean,
``energy_std`` (eV) and ``forces_std`` ((n_atoms, 3) eV/A, the std of each force component
over the members); a single model's does not. The spread of a frame is DeePMD's maximal force
deviation, the largest per-atom norm of those component stds,

    spread = max_i sqrt(sum_c forces_std[i, c]^2)   (eV/A),

recorded on every kept MD frame (``info["force_spread"]``). Frames whose spread exceeds a
threshold are the candidates a labelling round would take: :func:`candidates_table` writes
them as a configurations table (``pilip label`` reads it), each with a unique content id, its
system, charge and multiplicity, ``parent_id`` the test structure its run started from, and
the model, run, step and spread in ``generator_params``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from ase import Atoms
from ase.calculators.calculator import Calculator

from pilip import keys
from pilip.atomic_io import atomic_path
from pilip.errors import PilipError
from pilip.tables import CONFIGURATION_SCHEMA, configurations_from_atoms

FORCES_STD = "forces_std"  # calculator results key of a committee: (n_atoms, 3) eV/A
FORCE_SPREAD = "force_spread"  # frame info key: eV/A, see force_spread()
GENERATOR = "md_spread"  # the candidates' `generator` column
CSV_COLUMNS = ("run", "system", "step", "time_ps", "force_spread_ev_per_a", "candidate")


def force_spread(results: Mapping[str, Any]) -> float | None:
    """max_i ||forces_std_i|| in eV/A from a calculator's ``results``; None without
    ``forces_std`` (a single model). NaN when the stds are not finite."""
    std = results.get(FORCES_STD)
    if std is None:
        return None
    std = np.asarray(std, dtype=np.float64).reshape(-1, 3)
    return float(np.max(np.linalg.norm(std, axis=1))) if len(std) else 0.0


def spread_statistics(frames: list[Atoms]) -> dict[str, float | None]:
    """``mean`` and ``max`` (eV/A) of the finite spreads of ``frames``; None when none has one."""
    values = [f.info[FORCE_SPREAD] for f in frames if FORCE_SPREAD in f.info]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": None, "max": None}
    return {"mean": float(np.mean(finite)), "max": float(np.max(finite))}


def require_committee(calculator: Calculator, atoms: Atoms, flag: str, model: str) -> None:
    """PilipError unless ``calculator`` reports ``forces_std`` for ``atoms`` (one evaluation).

    ``flag`` names the option that needs a committee (e.g. ``--spread-threshold 0.2``),
    ``model`` the checkpoint, for the message.
    """
    probe = atoms.copy()
    probe.calc = calculator
    probe.get_forces()
    if FORCES_STD not in calculator.results:
        raise PilipError(
            f"{flag}: {model} is not a committee (its calculator reports no {FORCES_STD}); "
            "train one with several members, or leave the threshold out"
        )


def is_candidate(frame: Atoms, threshold: float | None) -> bool:
    """Whether ``frame``'s spread exceeds ``threshold`` (eV/A). Never the starting frame
    (step 0: a test structure, already labelled) nor a frame with non-finite positions."""
    spread = frame.info.get(FORCE_SPREAD)
    return (
        threshold is not None
        and spread is not None
        and math.isfinite(spread)
        and spread > threshold
        and frame.info.get("step", 0) > 0
        and bool(np.isfinite(frame.positions).all())
    )


def write_spread_csv(frames: list[Atoms], threshold: float | None, path: str | Path) -> int:
    """The spread of every frame that has one as CSV (``CSV_COLUMNS``; time in ps, spread in
    eV/A, ``candidate`` 1 where :func:`is_candidate`), atomically. Only the header for a
    single model. Returns the number of rows."""
    rows = [
        (
            f.info["run"],
            f.info.get(keys.SYSTEM, ""),
            f.info["step"],
            f.info["time_fs"] / 1000.0,
            f.info[FORCE_SPREAD],
            int(is_candidate(f, threshold)),
        )
        for f in frames
        if FORCE_SPREAD in f.info
    ]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    return len(rows)


def candidates_table(
    frames: list[Atoms], threshold: float | None, settings: Mapping[str, Any], model: str
) -> pa.Table:
    """The frames above ``threshold`` as a configurations table (empty when none, or when
    ``threshold`` is None), one row per distinct configuration id, in frame order.

    ``settings`` are the MD settings (``seed`` of run 0: run k used ``seed + k``; temperature,
    timestep, friction are recorded), ``model`` the checkpoint path. Frames need ``info``
    ``run``, ``step``, ``time_fs``, ``system``, ``config_id`` and may carry ``charge`` and
    ``multiplicity`` (default 0 and 1).
    """
    chosen, seen = [], set()
    for frame in frames:
        if is_candidate(frame, threshold):
            chosen.append(frame)
    if not chosen:
        return CONFIGURATION_SCHEMA.empty_table()
    params = [
        json.dumps(
            {
                "model": model,
                "run": f.info["run"],
                "step": f.info["step"],
                "time_ps": f.info["time_fs"] / 1000.0,
                FORCE_SPREAD: f.info[FORCE_SPREAD],
                "spread_threshold": threshold,
                "temperature": settings["temperature"],
                "timestep": settings["timestep"],
                "friction": settings["friction"],
            },
            sort_keys=True,
        )
        for f in chosen
    ]
    table = configurations_from_atoms(
        chosen,
        system=[str(f.info.get(keys.SYSTEM, "")) for f in chosen],
        generator=GENERATOR,
        generator_params=params,
        seed=[int(settings["seed"]) + int(f.info["run"]) for f in chosen],
        parent_id=[f.info.get("config_id") for f in chosen],
    )
    keep = []
    for row, config_id in enumerate(table.column(keys.ID).to_pylist()):
        if config_id not in seen:
            seen.add(config_id)
            keep.append(row)
    return table.take(pa.array(keep, pa.int64()))
