"""h(r) and its MAE (Fu et al., TMLR 2023): normalisation, invariances, exact values."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from pilip.errors import PilipError
from pilip.potential.distances import (
    BINS,
    R_MAX,
    distance_histogram,
    hr_mae,
    pair_distances,
    runs_hr,
    trajectory_frames,
)

DR = R_MAX / BINS


def trajectory(n=20, seed=0, name="CH3CH2OH"):
    """Ethanol rattled by 0.05 A per coordinate, ``n`` frames: a stand-in for MD frames."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule(name)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def test_every_pair_once_and_the_histogram_integrates_to_one():
    frames = trajectory()
    assert len(pair_distances(frames[0].positions)) == 9 * 8 // 2
    h, edges = distance_histogram(frames)
    assert h.shape == (BINS,) and edges[0] == 0.0 and edges[-1] == R_MAX
    assert np.sum(h) * DR == pytest.approx(1.0, abs=1e-12)
    # a density: 36 distances per frame, 20 frames, bins of 0.02 A
    counts = h * DR * 36 * 20
    np.testing.assert_allclose(counts, np.rint(counts), atol=1e-9)


def test_hr_mae_of_a_trajectory_against_itself_is_zero_and_rigid_motion_changes_nothing():
    frames = trajectory()
    h, _ = distance_histogram(frames)
    assert hr_mae(h, distance_histogram(frames)[0], DR) == 0.0
    moved = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.rotate(37.0, (1, 2, 3), center="COM")
        atoms.translate((5.0, -3.0, 2.0))
        moved.append(atoms)
    assert hr_mae(h, distance_histogram(moved)[0], DR) == pytest.approx(0.0, abs=1e-12)


def test_a_scaled_or_different_structure_differs_and_disjoint_ones_reach_two():
    frames = trajectory()
    h, _ = distance_histogram(frames)
    scaled = [Atoms(a.numbers, a.positions * 1.05) for a in frames]
    assert hr_mae(h, distance_histogram(scaled)[0], DR) > 0.3
    assert 0.0 < hr_mae(h, distance_histogram(trajectory(seed=1))[0], DR) < 1.0
    # H2 at 0.75 A and at 1.05 A: all weight in one bin each, no overlap
    a = distance_histogram([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.75]])])[0]
    b = distance_histogram([Atoms("H2", positions=[[0, 0, 0], [0, 0, 1.05]])])[0]
    assert a[37] == pytest.approx(1 / DR) and b[52] == pytest.approx(1 / DR)
    assert hr_mae(a, b, DR) == pytest.approx(2.0)
    # Fu et al.'s code: np.abs(h - h_ref).mean() * xlim, the same number
    h_other = distance_histogram(trajectory(seed=1))[0]
    assert hr_mae(h, h_other, DR) == pytest.approx(R_MAX * np.abs(h - h_other).mean())
    # half of the frames at each length: half the weight overlaps
    mixed = distance_histogram(
        [Atoms("H2", positions=[[0, 0, 0], [0, 0, d]]) for d in (0.75, 1.05)]
    )[0]
    assert hr_mae(a, mixed, DR) == pytest.approx(1.0)


def test_distances_beyond_r_max_are_left_out():
    far = Atoms("H3", positions=[[0, 0, 0], [0, 0, 0.75], [0, 0, 12.0]])
    h, _ = distance_histogram([far])
    assert np.sum(h) * DR == pytest.approx(1.0)
    assert h[37] == pytest.approx(1 / DR)  # the one pair below 10 A carries all the weight


def test_periodic_frames_and_empty_input_are_refused():
    box = molecule("H2O", vacuum=3.0)
    box.pbc = True
    with pytest.raises(PilipError, match="periodic"):
        distance_histogram([box])
    with pytest.raises(PilipError, match="no interatomic distance"):
        distance_histogram([])
    with pytest.raises(ValueError, match="different shapes"):
        hr_mae(np.zeros(3), np.zeros(4), 0.1)


def _run_frames(structures, run, failed=False):
    frames = []
    for step, atoms in enumerate(structures):
        frame = atoms.copy()
        frame.info.update(run=run, step=step * 10, system="ethanol")
        frames.append(frame)
    return {"run": run, "system": "ethanol", "stable": not failed}, frames


def test_runs_hr_leaves_out_the_start_and_the_failing_frame():
    reference = trajectory(10, seed=3)
    far = [Atoms(a.numbers, a.positions * 1.5) for a in reference[:2]]
    # run 0: the start (a far-away geometry), then exactly the reference frames: MAE 0
    run0, frames0 = _run_frames([far[0], *reference], 0)
    # run 1 failed: reference frames, then the failing frame (far away) that must not count
    run1, frames1 = _run_frames([reference[0], *reference, far[1]], 1, failed=True)
    runs, frames = [run0, run1], frames0 + frames1
    chosen = trajectory_frames(runs, frames)
    assert [len(chosen[0]), len(chosen[1])] == [10, 10]
    summary, per_run = runs_hr(runs, frames, {"ethanol": reference})
    assert per_run == [{"hr_mae": 0.0, "hr_frames": 10}, {"hr_mae": 0.0, "hr_frames": 10}]
    assert summary["hr_mae"] == 0.0
    system = summary["hr_systems"]["ethanol"]
    assert system["n_frames"] == 20 and system["n_reference"] == 10
    assert 0.0 < system["reference_halves_mae"] == summary["hr_mae_reference_halves"]
    # a run that failed before its first kept frame has nothing to compare
    run2, frames2 = _run_frames([reference[0], far[1]], 2, failed=True)
    summary, per_run = runs_hr([run2], frames2, {"ethanol": reference})
    assert per_run == [{"hr_mae": None, "hr_frames": 0}] and summary["hr_mae"] is None
