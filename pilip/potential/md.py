"""MD stability test: Langevin NVT with any ASE calculator and a bond-length failure criterion.

A run starts from one configuration, takes the bonded pairs of its topology (covalent radii,
ASE ``natural_cutoffs``) and stops as unstable as soon as any of those distances moved by more
than ``bond_threshold`` from its starting value, or the energy, forces or positions become
non-finite. Time is in fs inside ASE's unit system and reported in ps.

Over all runs :func:`stability_test` reports what Fu et al. ("Forces are not Enough", TMLR
2023) measure: the stable fraction, the time to the first failure (and the median), MD steps
per wall-clock second, h(r) against the dataset's test structures (:mod:`pilip.potential.
distances`) and, for a committee model, the force spread along the trajectory
(:mod:`pilip.potential.md_spread`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import pyarrow as pa
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.geometry import find_mic
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.neighborlist import natural_cutoffs, neighbor_list

from pilip import keys
from pilip.atomic_io import atomic_path
from pilip.errors import PilipError
from pilip.potential.distances import BINS, R_MAX, runs_hr
from pilip.potential.md_runs import RUNS_DIR, RunCheckpoint, RunProgress, RunStore
from pilip.potential.md_spread import FORCE_SPREAD, force_spread, spread_statistics
from pilip.rows import MD_START, RowFlags, stage_rows
from pilip.tables import atoms_list, read_table

# Two atoms are bonded when closer than BOND_SCALE times the sum of their covalent radii
# (the usual 20 % tolerance: every bond of common organic molecules, no geminal H...H pairs).
BOND_SCALE = 1.2
# the atoms a proton moves between in a proton transfer (N, O, F, S)
PROTON_PARTNERS = frozenset({7, 8, 9, 16})
PROTON_TRANSFER = ("fail", "allow")


@dataclass
class MDSettings:
    """Langevin NVT settings (same names and defaults as the ``md`` config section)."""

    temperature: float = 300.0  # K, thermostat target and initial Maxwell-Boltzmann velocities
    timestep: float = 0.5  # fs
    steps: int = 2000  # MD steps per run
    friction: float = 0.01  # 1/fs, Langevin friction
    bond_threshold: float = 0.5  # A, largest allowed change of a starting bond length
    trajectory_interval: int = 10  # steps between saved frames (the failing frame is always saved)
    seed: int = 0  # random seed of velocities and thermostat noise
    # "fail": every broken starting bond ends the run (Fu et al.); "allow": a hydrogen that
    # leaves an N, O, F or S for another one (bonded to it, or nearer to it than to the one
    # it left) is a proton transfer (counted; the topology is taken afresh), not a failure
    proton_transfer: str = "fail"


@dataclass
class MDResult:
    """Outcome of one MD run. Times in ps, temperatures in K, lengths in A."""

    stable: bool
    reason: str  # "completed", "bond", "non-finite energy", "non-finite forces or positions"
    steps_done: int
    time_ps: float  # simulated time reached
    time_to_failure_ps: float | None  # None when stable
    mean_temperature_K: float  # over the steps done (nan when none)
    max_bond_deviation: float  # A, largest |d - d0| seen over all bonds and steps
    n_proton_transfers: int  # proton transfers let through (proton_transfer "allow")
    n_bonds: int
    wall_time_s: float
    steps_per_s: float  # MD steps / wall_time_s
    mean_force_spread: float | None  # eV/A, over the kept frames; None for a single model
    max_force_spread: float | None  # eV/A (see pilip.potential.md_spread.force_spread)
    frames: list[Atoms] = field(default_factory=list, repr=False)
    resumed_step: int = 0  # the saved step this run continued from (0: it ran from the start)

    def summary(self) -> dict[str, object]:
        """JSON-ready dict of the outcome: everything but the frames and where it resumed
        (non-finite numbers become None)."""
        out = asdict(self)
        del out["frames"], out["resumed_step"]
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in out.items()
        }


def bonded_pairs(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """Bonds of the starting topology: pairs closer than 1.2 x the sum of their covalent radii.

    Returns:
        pairs: (n_bonds, 3 + 2) int array ``[i, j, S_x, S_y, S_z]`` with i < j or a periodic
            image shift S (cell vectors) added to atom j;
        lengths: (n_bonds,) A, the starting bond lengths.
    """
    i, j, shift = neighbor_list("ijS", atoms, natural_cutoffs(atoms, mult=BOND_SCALE))
    # neighbor_list lists each bond both ways: keep i < j, and one half of self-image bonds
    keep = (i < j) | ((i == j) & _first_nonzero_positive(shift))
    pairs = np.column_stack([i[keep], j[keep], shift[keep]]).astype(np.int64)
    return pairs, bond_lengths(atoms, pairs)


def _first_nonzero_positive(shift: np.ndarray) -> np.ndarray:
    """(n,) bool: whether the first non-zero entry of each (3,) shift vector is positive."""
    first = np.argmax(shift != 0, axis=1)
    return shift[np.arange(len(shift)), first] > 0


def bond_lengths(atoms: Atoms, pairs: np.ndarray) -> np.ndarray:
    """(n_bonds,) A: current lengths of the bonds in ``pairs`` (see ``bonded_pairs``)."""
    positions = atoms.get_positions()
    vectors = positions[pairs[:, 1]] - positions[pairs[:, 0]] + pairs[:, 2:] @ atoms.cell.array
    if atoms.pbc.any():
        # atoms are not wrapped during MD, so the image shift stays valid; mic only for safety
        vectors, _ = find_mic(vectors, atoms.cell, atoms.pbc)
    return np.linalg.norm(vectors, axis=1)


def run_langevin(
    atoms: Atoms,
    calculator: Calculator,
    settings: MDSettings,
    checkpoint: RunCheckpoint | None = None,
) -> MDResult:
    """Run Langevin NVT from ``atoms`` (not modified) with ``calculator`` until failure or end.

    Frames (positions, momenta, energy and forces in eV and eV/A, ``info`` with ``step``,
    ``time_fs``, ``temperature_K`` and, for a committee model, ``force_spread`` in eV/A) are
    kept every ``trajectory_interval`` steps, plus the first and the last (failing) one.
    With a ``checkpoint`` (:meth:`pilip.potential.md_runs.RunStore.checkpoint`) the run
    continues from its saved progress, if any, and saves its progress whenever the
    checkpoint is due: an interrupted run taken up again takes the steps it would have taken;
    it also writes the kept frames to the run's log as they come (``RunCheckpoint.log``).
    """
    started = time.perf_counter()
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(settings.seed)
    p = None if checkpoint is None else checkpoint.load()  # the run's progress
    if p is None:
        thermalize_momenta(atoms, settings.temperature, rng=rng)
        Stationary(atoms)
        if len(atoms) > 2:  # a diatomic's rotation about its axis is undefined (ASE divides by 0)
            ZeroRotation(atoms)
        pairs, reference = bonded_pairs(atoms)
        p = RunProgress(0, pairs, reference, [_frame(atoms, 0, settings.timestep)])
    else:  # the state after step ``p.step``, bit for bit
        atoms.set_positions(p.positions, apply_constraint=False)
        atoms.set_momenta(p.momenta, apply_constraint=False)
        rng.bit_generator.state = p.rng_state
    if checkpoint is not None:
        checkpoint.start_log(p.frames)
    earlier_s, resumed_step = p.wall_time_s, p.step
    atoms.set_constraint(FixCom())
    dynamics = Langevin(
        atoms,
        timestep=settings.timestep * units.fs,
        temperature_K=settings.temperature,
        friction=settings.friction / units.fs,
        fixcm=False,
        rng=rng,
    )
    reason = "completed"
    while p.step < settings.steps:
        dynamics.step()
        p.step += 1
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        if not math.isfinite(energy):
            reason = "non-finite energy"
        elif not (np.isfinite(forces).all() and np.isfinite(atoms.positions).all()):
            reason = "non-finite forces or positions"
        else:
            p.temperatures.append(atoms.get_temperature())
            if len(p.pairs):
                change = np.abs(bond_lengths(atoms, p.pairs) - p.reference)
                p.max_deviation = max(p.max_deviation, float(np.max(change)))
                broken = p.pairs[change > settings.bond_threshold]
                if (
                    len(broken)
                    and settings.proton_transfer == "allow"
                    and all(proton_transferred(atoms, pair) for pair in broken)
                ):
                    p.transfers += 1
                    p.pairs, p.reference = bonded_pairs(atoms)  # the new topology from here on
                elif len(broken):
                    reason = "bond"
        if (
            reason != "completed"
            or p.step % settings.trajectory_interval == 0
            or p.step == settings.steps
        ):
            p.frames.append(_frame(atoms, p.step, settings.timestep))
            if checkpoint is not None:
                checkpoint.log(p.frames[-1])
        if reason != "completed":
            break
        if checkpoint is not None and p.step < settings.steps and checkpoint.due():
            p.positions, p.momenta = atoms.get_positions(), atoms.get_momenta()
            p.rng_state = rng.bit_generator.state
            p.wall_time_s = earlier_s + time.perf_counter() - started
            checkpoint.save(p)
    wall_time_s = earlier_s + time.perf_counter() - started
    stable = reason == "completed"
    time_ps = p.step * settings.timestep / 1000.0
    spread = spread_statistics(p.frames)
    return MDResult(
        stable=stable,
        reason=reason,
        steps_done=p.step,
        time_ps=time_ps,
        time_to_failure_ps=None if stable else time_ps,
        mean_temperature_K=float(np.mean(p.temperatures)) if p.temperatures else float("nan"),
        max_bond_deviation=p.max_deviation,
        n_proton_transfers=p.transfers,
        n_bonds=len(p.pairs),
        wall_time_s=wall_time_s,
        steps_per_s=p.step / wall_time_s if wall_time_s > 0 else float("nan"),
        mean_force_spread=spread["mean"],
        max_force_spread=spread["max"],
        frames=p.frames,
        resumed_step=resumed_step,
    )


def proton_transferred(atoms: Atoms, pair: np.ndarray) -> bool:
    """Whether the broken bond ``pair`` (a row of ``bonded_pairs``) is a proton transfer: a
    hydrogen bonded to an N, O, F or S at the start that is now bonded (``BOND_SCALE`` x the
    covalent radii) to another of them, or closer to another of them than to the one it left
    (past the midpoint of the hop: when the bond has stretched by the threshold, a proton
    between two oxygens 2.6 A apart is ~1.2 A from each). Molecules only (no image shift)."""
    i, j = int(pair[0]), int(pair[1])
    numbers = atoms.numbers
    if numbers[i] == 1 and numbers[j] in PROTON_PARTNERS:
        hydrogen, donor = i, j
    elif numbers[j] == 1 and numbers[i] in PROTON_PARTNERS:
        hydrogen, donor = j, i
    else:
        return False
    radii = natural_cutoffs(atoms, mult=BOND_SCALE)
    distances = atoms.get_distances(hydrogen, range(len(atoms)))
    return any(
        k != donor
        and numbers[k] in PROTON_PARTNERS
        and distances[k] < max(radii[k] + radii[hydrogen], distances[donor])
        for k in range(len(atoms))
    )


def _frame(atoms: Atoms, step: int, timestep_fs: float) -> Atoms:
    """A constraint-free copy of ``atoms`` carrying its energy, forces and MD step info."""
    frame = atoms.copy()
    frame.set_constraint()
    frame.info.update(
        step=step, time_fs=step * timestep_fs, temperature_K=float(atoms.get_temperature())
    )
    frame.calc = SinglePointCalculator(
        frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
    )
    spread = force_spread(atoms.calc.results)
    if spread is not None:
        frame.info[FORCE_SPREAD] = spread
    return frame


def write_trajectory(frames: list[Atoms], path: str | Path) -> None:
    """Write ``frames`` as one extended-XYZ file (atomic; ``ase.io.read(path, ":")`` reads it)."""
    with atomic_path(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")


def test_structures(dataset: str | Path) -> list[Atoms]:
    """Every test-split configuration (``rows.MD_START``) of ``dataset``, by system and id.

    ``info`` keeps ``id``, ``system``, ``charge`` and ``multiplicity``; no calculator is
    attached. Raises PilipError when the dataset has no test rows.
    """
    table = read_table(dataset, kind="dataset")
    split = np.asarray(table.column(keys.SPLIT).to_pylist(), dtype=object)
    flags = RowFlags(split=split, force_validation=np.zeros(len(split), dtype=bool))
    table = table.take(pa.array(stage_rows(MD_START, flags)))
    if table.num_rows == 0:
        raise PilipError(f"{dataset}: no test-split rows to start MD from; give splits.test > 0")
    table = table.sort_by([(keys.SYSTEM, "ascending"), (keys.ID, "ascending")])
    structures = atoms_list(table)
    for atoms in structures:
        atoms.calc = None
    return structures


def first_per_system(structures: list[Atoms], per_system: int) -> list[Atoms]:
    """The first ``per_system`` of ``structures`` of each system (``info["system"]``), in order."""
    starts, taken = [], {}
    for atoms in structures:
        system = atoms.info.get(keys.SYSTEM, "")
        if taken.get(system, 0) < per_system:
            taken[system] = taken.get(system, 0) + 1
            starts.append(atoms)
    return starts


def select_starts(dataset: str | Path, per_system: int) -> list[Atoms]:
    """The first ``per_system`` test-split configurations (``rows.MD_START``) of each system,
    in id order.

    ``info`` keeps ``id`` and ``system``. Raises PilipError when the dataset has no test rows.
    """
    return first_per_system(test_structures(dataset), per_system)


def by_system(structures: list[Atoms]) -> dict[str, list[Atoms]]:
    """``structures`` grouped by ``info["system"]``, each group in the order given."""
    groups: dict[str, list[Atoms]] = {}
    for atoms in structures:
        groups.setdefault(atoms.info.get(keys.SYSTEM, ""), []).append(atoms)
    return groups


def median_time_to_failure(times: list[float | None]) -> float | None:
    """Median time to failure (ps) over runs, a stable run (None) counting as surviving past
    its end: None when half of the runs or more were stable, or when there are no runs."""
    if not times:
        return None
    value = float(np.median([np.inf if t is None else t for t in times]))
    return value if math.isfinite(value) else None


def outcome(run: Mapping[str, Any]) -> str:
    """How one run of md.json's ``runs`` ended, in a few words."""
    transfers = run["n_proton_transfers"]
    said = f", {transfers} proton transfers" if transfers else ""
    if run["stable"]:
        return f"stable over {run['time_ps']:g} ps{said}"
    return f"failed at {run['time_ps']:g} ps ({run['reason']}){said}"


def run_settings(settings: MDSettings, k: int) -> MDSettings:
    """The settings of run ``k`` of a stability test: ``settings`` with seed + k."""
    return replace(settings, seed=settings.seed + k)


def simulate_run(
    k: int, start: Atoms, calculator: Calculator, settings: MDSettings, store: RunStore | None
) -> tuple[dict, list[Atoms], str]:
    """Run ``k`` of a stability test from ``start`` (continued from its saved progress in
    ``store``, kept there when it ends): its md.json entry, its frames (``info`` with
    ``run``, ``system`` and ``config_id``) and how it went, in a few words."""
    settings = run_settings(settings, k)
    checkpoint = None if store is None else store.checkpoint(k, start, settings)
    result = run_langevin(start, calculator, settings, checkpoint)
    origin = f"{result.steps_per_s:.0f} steps/s" + (
        f", continued from step {result.resumed_step}" if result.resumed_step else ""
    )
    system, config_id = start.info.get("system"), start.info.get("id")
    run = {"run": k, "system": system, "config_id": config_id, **result.summary()}
    for frame in result.frames:
        frame.info.update(run=k, system=system, config_id=config_id)
    if store is not None:
        store.save(k, start, settings, run, result.frames)
    return run, result.frames, origin


def simulate_in_processes(
    make_calculator: Callable[[], Calculator],
    starts: list[Atoms],
    todo: list[int],
    settings: MDSettings,
    store: RunStore | None,
    jobs: int,
) -> Iterator[tuple[int, dict, list[Atoms], str]]:
    """:func:`simulate_run` of the runs ``todo`` (indices into ``starts``), up to ``jobs`` at
    once in fresh ("spawn") processes of one torch thread each, every process building its
    calculator once with ``make_calculator``; yields (k, run, frames, how) as each ends.

    If a run raises, no further run starts; those running go on to their end (each is kept
    in ``store`` when it ends) and then the error is raised. Workers whose parent is killed
    outright (SIGKILL, no clean-up) end within seconds; their runs' saved progress stays.
    """
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # fork after torch's threads can hang
    with ProcessPoolExecutor(min(jobs, len(todo)), context) as pool:
        futures = {
            pool.submit(_worker_run, make_calculator, os.getpid(), k, starts[k], settings, store): k
            for k in todo
        }
        pending = set(futures)
        while pending:
            ended, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in ended:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()
                yield (futures[future], *future.result())


_WORKER_CALCULATOR: list[Calculator] = []  # a simulate_in_processes worker's, once built


def _worker_run(
    make_calculator: Callable[[], Calculator],
    parent: int,
    k: int,
    start: Atoms,
    settings: MDSettings,
    store: RunStore | None,
) -> tuple[dict, list[Atoms], str]:
    if not _WORKER_CALCULATOR:  # the process's first run (an error here reaches the caller)
        import torch

        torch.set_num_threads(1)
        threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()
        _WORKER_CALCULATOR.append(make_calculator())
    return simulate_run(k, start, _WORKER_CALCULATOR[0], settings, store)


def _exit_without(parent: int, every_s: float = 2.0) -> None:
    """End this worker process once ``parent`` is gone (killed: nothing would take its runs'
    results; what each run saved in its store stays for a rerun)."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def stability_test(
    starts: list[Atoms],
    calculator: Calculator | Callable[[], Calculator],
    settings: MDSettings,
    references: dict[str, list[Atoms]] | None = None,
    store: RunStore | None = None,
    log: Callable[[str], None] | None = None,
    jobs: int = 1,
    only: list[int] | None = None,
) -> tuple[dict[str, object], list[Atoms]]:
    """One Langevin run per start (seed ``settings.seed + k``): md.json content and all frames.

    Frames carry ``info["run"]`` (k), ``system`` and ``config_id`` so one extxyz file holds
    every run. With ``references`` (test structures by system, e.g. ``by_system(
    test_structures(dataset))``) the summary and every run get the h(r) MAE against them
    (:func:`pilip.potential.distances.runs_hr`). A committee model's force spread is
    summarised (``force_spread_mean``, ``force_spread_max``; None for a single model).
    With a ``store`` (:class:`pilip.potential.md_runs.RunStore`) every finished run is kept
    on disk and a run it already holds for this model, start and settings is not simulated
    again (its wall time is the one measured then); a run it holds unfinished continues from
    its last saved step. ``log`` gets one line per run as it ends (hours apart in a long test).

    ``jobs`` > 1 simulates up to that many runs at once, each in a process of its own with one
    torch thread (:func:`simulate_in_processes`); ``calculator`` is then a picklable callable
    that builds the calculator (once per process), e.g. ``functools.partial(PilipCalculator,
    path)``. A run's steps do not depend on where it ran: the results are those of ``jobs=1``
    with the same thread count, in run order, only sooner.

    ``only`` (indices into ``starts``) runs those runs alone, each with the seed and kept run
    it has in the whole test (a test split between jobs or sessions); the summary is theirs.
    """
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: use 1 or more")
    if jobs > 1 and isinstance(calculator, Calculator):
        raise ValueError(f"jobs={jobs}: give a callable that builds the calculator in each process")
    done: dict[int, tuple[dict, list[Atoms]]] = {}

    def finished(k: int, run: dict, run_frames: list[Atoms], origin: str) -> None:
        done[k] = run, run_frames
        if log is not None:
            where = f"{run['system']} {run['config_id']}"
            log(f"run {k + 1}/{len(starts)} ({where}): {outcome(run)} ({origin})")

    chosen = list(range(len(starts))) if only is None else sorted(set(only))
    if chosen and not 0 <= chosen[0] <= chosen[-1] < len(starts):
        raise ValueError(f"only={only}: indices into the {len(starts)} starts")
    todo = []
    for k in chosen:
        atoms = starts[k]
        kept = None if store is None else store.load(k, atoms, run_settings(settings, k))
        if kept is None:
            todo.append(k)
        else:
            finished(k, *kept, f"kept in {RUNS_DIR}/")
    if jobs > 1 and len(todo) > 1:
        for k, run, run_frames, origin in simulate_in_processes(
            calculator, starts, todo, settings, store, jobs
        ):
            finished(k, run, run_frames, origin)
    else:
        if todo and not isinstance(calculator, Calculator):
            calculator = calculator()
        for k in todo:
            finished(k, *simulate_run(k, starts[k], calculator, settings, store))
    runs = [done[k][0] for k in chosen]
    frames = [frame for k in chosen for frame in done[k][1]]
    failures = [r["time_to_failure_ps"] for r in runs if not r["stable"]]
    steps = np.array([r["steps_done"] for r in runs], dtype=float)
    temps = np.array([r["mean_temperature_K"] for r in runs], dtype=float)  # None -> nan
    wall = float(sum(r["wall_time_s"] for r in runs))
    weighted = np.isfinite(temps) & (steps > 0)
    spread = spread_statistics(frames)
    summary = {
        "n_runs": len(runs),
        "n_stable": len(runs) - len(failures),
        "stable_fraction": (len(runs) - len(failures)) / len(runs) if runs else None,
        "min_time_to_failure_ps": min(failures) if failures else None,
        "median_time_to_failure_ps": median_time_to_failure(
            [r["time_to_failure_ps"] for r in runs]
        ),
        "mean_time_ps": float(np.mean([r["time_ps"] for r in runs])) if runs else None,
        "n_proton_transfers": int(sum(r["n_proton_transfers"] for r in runs)),
        "mean_temperature_K": float(np.average(temps[weighted], weights=steps[weighted]))
        if weighted.any()
        else None,
        "steps_per_s": float(steps.sum() / wall) if wall > 0 else None,
        "force_spread_mean": spread["mean"],
        "force_spread_max": spread["max"],
        "settings": asdict(settings),
        "units": {
            "temperature": "K",
            "timestep": "fs",
            "friction": "1/fs",
            "bond_threshold": "A",
            "time": "ps",
            "max_bond_deviation": "A",
            "wall_time_s": "s",
            "steps_per_s": "MD steps per wall-clock second",
            "hr_mae": "1 (integral of |h(r) - h_ref(r)| dr: 0 identical, 2 disjoint)",
            "hr_r_max": "A",
            "force_spread": "eV/A (largest per-atom norm of the committee's force std)",
        },
    }
    if references is not None:
        hr, per_run = runs_hr(runs, frames, references, R_MAX, BINS)
        summary.update(hr)
        for run, values in zip(runs, per_run, strict=True):
            run.update(values)
    summary["runs"] = runs
    return summary, frames
