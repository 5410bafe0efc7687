"""What a committee's force spread ranks: force components, atoms, atom sites or geometries.

`pilip evaluate` reports the Spearman correlation of a committee's spread with its error over
force components. Ranked per atom instead (norm of the error against norm of the spread), the
same committee scores higher; this script shows where that comes from. For the committees of
``benchmarks/committee_md.py`` (``OUT/runs/committee-n{size}-s{seed}/model.pt``) on the 650
``test_MD_300K`` frames (DFT forces), one line per seed:

* ``component``: what `pilip evaluate` reports (|error| against spread, per component);
* ``per atom``: error norm against spread norm per atom, and ``ideal``, the same for errors
  drawn from N(0, spread**2) (one seeded draw; see pilip.potential.calibration);
* ``site means``: over the 15 atom sites of acac, the mean spread against the mean error:
  does the committee know which atoms are hard?
* ``within a site``: the per-atom ranking over the 650 geometries of one site (min-max over
  sites, and their median), and ``site-normalised``: every site's norms divided by their
  mean, then ranked together: does the committee know which geometries are hard?

    OMP_NUM_THREADS=1 python -m benchmarks.committee_ranking --out OUT --seeds 0,1,2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pilip.potential.calibration import spearman


def committee_forces(model: Path, frames: list) -> tuple[np.ndarray, np.ndarray]:
    """(error, spread), each (n_frames, n_atoms, 3) eV/A: committee mean minus reference
    forces, and the members' force std, over ``frames`` (ASE Atoms with reference forces)."""
    from pilip.potential.calculator import PilipCalculator

    calculator = PilipCalculator(model, device="cpu")
    errors, spreads = [], []
    for atoms in frames:
        reference = atoms.get_forces().copy()
        copy = atoms.copy()
        copy.calc = calculator
        errors.append(copy.get_forces() - reference)
        spreads.append(calculator.results["forces_std"])
    return np.array(errors), np.array(spreads)


def rankings(error: np.ndarray, spread: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The Spearman correlations of the module docstring for one committee."""
    error_norm, spread_norm = np.linalg.norm(error, axis=2), np.linalg.norm(spread, axis=2)
    drawn = np.linalg.norm(np.random.default_rng(seed).normal(size=spread.shape) * spread, axis=2)
    within = [spearman(spread_norm[:, i], error_norm[:, i]) for i in range(error.shape[1])]
    return {
        "component": spearman(spread, error),
        "per_atom": spearman(spread_norm, error_norm),
        "per_atom_ideal": spearman(spread_norm, drawn),
        "site_means": spearman(spread_norm.mean(0), error_norm.mean(0)),
        "within_site_min": float(np.min(within)),
        "within_site_median": float(np.median(within)),
        "within_site_max": float(np.max(within)),
        "site_normalised": spearman(
            spread_norm / spread_norm.mean(0), error_norm / error_norm.mean(0)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="benchmarks.committee_md --out")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/acac"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", type=int, default=100, help="committee_md --size")
    parser.add_argument("--n-test", type=int, help="the first N test frames only (smoke)")
    args = parser.parse_args()
    import ase.io
    import torch

    torch.set_num_threads(1)
    frames = ase.io.read(args.data / "test_MD_300K.xyz", index=f":{args.n_test or ''}")
    print("| seed | component | per atom (ideal) | site means | within a site: min-max (median) "
          "| site-normalised |\n|---:|---:|---|---:|---|---:|")  # fmt: skip
    for seed in (int(s) for s in args.seeds.split(",")):
        model = args.out / "runs" / f"committee-n{args.size}-s{seed}" / "model.pt"
        r = rankings(*committee_forces(model, frames))
        print(
            f"| {seed} | {r['component']:.2f} | {r['per_atom']:.2f} ({r['per_atom_ideal']:.2f}) "
            f"| {r['site_means']:.2f} | {r['within_site_min']:.2f} to {r['within_site_max']:.2f} "
            f"({r['within_site_median']:.2f}) | {r['site_normalised']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
