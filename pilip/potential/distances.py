"""h(r), the distribution of all interatomic distances, and its MAE (Fu et al., TMLR 2023).

Fu, Wu, Wang, Xie, Keten, Gomez-Bombarelli and Jaakkola, "Forces are not Enough: Benchmark and
Critical Evaluation for Machine Learning Force Fields with Molecular Simulations", TMLR 2023
(arXiv:2210.07237), compare MD trajectories of the MD17 molecules with the reference through

    h(r) = 1 / (N (N - 1)) sum_i sum_{j != i} delta(r - |x_i - x_j|)      (averaged over frames)
    MAE_h(r) = integral_0^inf |<h(r)> - <h_ref(r)>| dr

evaluated on a histogram of 500 bins from 0 to 10 A (their code, github.com/kyonofx/MDsim
``observable.ipynb``: ``np.histogram(distances, bins, density=True)`` and
``np.abs(h - h_ref).mean() * xlim``, which is the same sum). Here :func:`distance_histogram`
is the frame average of h(r) as a histogram density (every pair once, every frame, 1/A; it
integrates to 1 over [0, r_max]) and :func:`hr_mae` the integral as a Riemann sum,
``dr * sum |h - h_ref|``: 0 for identical distributions, 2 for disjoint ones, whatever the bin
width and the number of frames. The mean of ``|h - h_ref|`` over the bins without the factor
r_max is 10x smaller at r_max = 10 A: mind the scale when comparing with other numbers.

Molecules only: a periodic frame is refused, because the distances of a crystal or a liquid to
10 A run over periodic images (a radial distribution function), which is another quantity.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase import Atoms

from pilip.errors import PilipError

R_MAX = 10.0  # A, upper end of the histogram (Fu et al.)
BINS = 500  # bins of width R_MAX / BINS = 0.02 A (Fu et al.)


def pair_distances(positions: np.ndarray) -> np.ndarray:
    """(n (n - 1) / 2,) A: every distance between two of the (n, 3) ``positions`` (A), once."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    i, j = np.triu_indices(len(positions), k=1)
    return np.linalg.norm(positions[j] - positions[i], axis=1)


def distance_histogram(
    frames: Iterable[Atoms], r_max: float = R_MAX, bins: int = BINS
) -> tuple[np.ndarray, np.ndarray]:
    """h(r) of ``frames`` as a normalised histogram of all their interatomic distances.

    Every pair of atoms of every frame counts once; the counts of all frames are summed and
    divided by (number of distances below ``r_max``) x (bin width), so the histogram is a
    density in 1/A that integrates to 1 over [0, ``r_max``] and runs of different length
    compare. Distances of ``r_max`` and more are left out (none for a molecule smaller than
    ``r_max``).

    Returns:
        density: (bins,) 1/A;
        edges: (bins + 1,) A, the bin edges from 0 to ``r_max``.

    Raises PilipError for a periodic frame (see the module docstring) or when no frame has a
    distance below ``r_max``.
    """
    edges = np.linspace(0.0, r_max, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for atoms in frames:
        if atoms.pbc.any():
            raise PilipError(
                f"h(r) of a periodic structure ({atoms.get_chemical_formula()}, pbc "
                f"{atoms.pbc.tolist()}): pilip compares molecules only; give molecules"
            )
        counts += np.histogram(pair_distances(atoms.positions), bins=edges)[0]
    total = counts.sum()
    if total == 0:
        raise PilipError(
            f"h(r): no interatomic distance below {r_max:g} A in the frames given "
            "(no frames, or single atoms): nothing to compare"
        )
    return counts / (total * (edges[1] - edges[0])), edges


def hr_mae(h: np.ndarray, h_ref: np.ndarray, dr: float) -> float:
    """Fu et al.'s MAE of h(r): ``dr * sum |h - h_ref|``, the integrated absolute difference.

    ``h`` and ``h_ref`` are (bins,) densities in 1/A on the same bins of width ``dr`` (A), as
    :func:`distance_histogram` returns them. Dimensionless, between 0 (identical) and 2
    (no overlap).
    """
    h, h_ref = np.asarray(h, dtype=np.float64), np.asarray(h_ref, dtype=np.float64)
    if h.shape != h_ref.shape:
        raise ValueError(f"histograms of different shapes {h.shape} and {h_ref.shape}")
    return float(dr * np.abs(h - h_ref).sum())


def trajectory_frames(runs: list[dict], frames: list[Atoms]) -> dict[int, list[Atoms]]:
    """The frames of each run that h(r) is measured on, by run number (``info["run"]``).

    The starting frame (step 0, a test structure itself) is left out, and so is the failing
    frame of an unstable run: a failed run is measured over its frames before the failure.
    Every other kept frame counts (no equilibration is discarded: a run starts from a test
    structure with Maxwell-Boltzmann velocities, already a sample of the test ensemble).
    """
    failed = {r["run"] for r in runs if not r["stable"]}
    chosen: dict[int, list[Atoms]] = {r["run"]: [] for r in runs}
    for frame in frames:  # in step order within a run
        if frame.info.get("step", 0) > 0:
            chosen.setdefault(frame.info["run"], []).append(frame)
    for run in failed:
        if chosen.get(run):  # a run's last kept frame is its last step: here the failing one
            chosen[run].pop()
    return chosen


def runs_hr(
    runs: list[dict],
    frames: list[Atoms],
    references: dict[str, list[Atoms]],
    r_max: float = R_MAX,
    bins: int = BINS,
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """h(r) MAE of MD runs against the reference structures of their systems.

    ``runs`` are the per-run dicts of :func:`pilip.potential.md.stability_test` (``run``,
    ``system``, ``stable``), ``frames`` their frames (``info["run"]``, ``info["step"]``),
    ``references`` reference structures by system (the dataset's test structures).

    Returns the md.json keys and one dict per run (``hr_mae``, ``hr_frames``):

    * per run: its frames (:func:`trajectory_frames`) against its system's reference;
    * per system (``hr_systems``): the frames of all its runs pooled, against the reference,
      with ``reference_halves_mae``, the MAE between the even and the odd reference structures
      (a noise floor: what a reference of half the size differs by from itself);
    * ``hr_mae`` and ``hr_mae_reference_halves``: the means of those over the systems.

    An MAE is None where there is nothing to compare (no frames, or no reference).
    """
    chosen = trajectory_frames(runs, frames)
    dr = r_max / bins
    ref_h = {
        system: distance_histogram(structures, r_max, bins)[0]
        for system, structures in references.items()
        if structures
    }

    def mae(system: str, sample: list[Atoms]) -> float | None:
        if not sample or system not in ref_h:
            return None
        return hr_mae(distance_histogram(sample, r_max, bins)[0], ref_h[system], dr)

    per_run = [
        {"hr_mae": mae(r["system"], chosen[r["run"]]), "hr_frames": len(chosen[r["run"]])}
        for r in runs
    ]
    systems: dict[str, dict[str, object]] = {}
    for system in dict.fromkeys(r["system"] for r in runs):
        pooled = [f for r in runs if r["system"] == system for f in chosen[r["run"]]]
        structures = references.get(system, [])
        halves = None
        if len(structures) >= 2:
            even = distance_histogram(structures[0::2], r_max, bins)[0]
            odd = distance_histogram(structures[1::2], r_max, bins)[0]
            halves = hr_mae(even, odd, dr)
        systems[system] = {
            "hr_mae": mae(system, pooled),
            "n_frames": len(pooled),
            "n_reference": len(structures),
            "reference_halves_mae": halves,
        }
    summary = {
        "hr_mae": _mean(s["hr_mae"] for s in systems.values()),
        "hr_mae_reference_halves": _mean(s["reference_halves_mae"] for s in systems.values()),
        "hr_r_max": r_max,
        "hr_bins": bins,
        "hr_systems": systems,
    }
    return summary, per_run


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
