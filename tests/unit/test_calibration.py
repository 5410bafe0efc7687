"""Calibration metrics of committee spreads on synthetic errors whose distribution is known."""

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from pilip.potential.calibration import (
    SPREAD_FLOOR,
    _area_between,
    calibration_curve,
    calibration_metrics,
    committee_calibration,
    fit_scale,
    gaussian_nll,
    miscalibration_area,
    spearman,
)
from pilip.potential.plots import plot_calibration

N = 20000


def calibrated(seed: int = 1, factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Spreads spanning two decades and errors drawn from N(0, (factor * spread)**2)."""
    rng = np.random.default_rng(seed)
    spread = 10.0 ** rng.uniform(-3, -1, N)
    return spread, factor * spread * rng.standard_normal(N)


def test_perfectly_calibrated_spreads():
    spread, error = calibrated()
    assert miscalibration_area(spread, error) < 0.02
    # |error| = spread * |z|: ranks follow the spread but the |z| factor scrambles them
    assert spearman(spread, error) > 0.3
    assert fit_scale(spread, error) == pytest.approx(1.0, rel=0.03)
    analytic = np.mean(0.5 * np.log(2 * np.pi * spread**2) + 0.5)
    # the per-point NLL has standard deviation 1/sqrt(2): 0.02 is four standard errors
    assert gaussian_nll(spread, error) == pytest.approx(analytic, abs=0.02)


def test_spreads_three_times_too_small():
    spread, error = calibrated(seed=2, factor=3.0)
    assert fit_scale(spread, error) == pytest.approx(3.0, rel=0.03)
    assert miscalibration_area(spread, error) > 0.2
    # fitted and applied, the scale repairs both the intervals and the likelihood
    metrics = calibration_metrics(spread, error, scale=fit_scale(spread, error))
    assert metrics["miscalibration_area_scaled"] < 0.02
    assert metrics["nll"] == pytest.approx(metrics["nll_ideal"], abs=0.02)
    assert gaussian_nll(spread, error) > metrics["nll"] + 1.0
    # the ranking does not care about the scale
    assert metrics["spearman"] == pytest.approx(spearman(spread, error / 3.0))


def test_spreads_too_large_put_the_curve_above_the_diagonal():
    spread, error = calibrated(seed=3, factor=0.3)
    expected, observed = calibration_curve(spread, error)
    assert np.all(observed[1:-1] > expected[1:-1])
    assert fit_scale(spread, error) == pytest.approx(0.3, rel=0.03)


def test_errors_independent_of_spread_rank_near_zero():
    rng = np.random.default_rng(4)
    spread = rng.uniform(0.01, 0.1, N)
    error = rng.normal(scale=0.05, size=N)
    # the standard error of Spearman's rho is about 1/sqrt(N) = 0.007
    assert abs(spearman(spread, error)) < 0.03


def test_spearman_of_ties_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    for _ in range(5):
        spread = rng.integers(0, 6, size=60).astype(float)  # many ties
        error = rng.integers(-4, 5, size=60).astype(float)  # ties in |error| too
        expected = stats.spearmanr(spread, np.abs(error)).statistic
        assert spearman(spread, error) == pytest.approx(expected, abs=1e-12)


def test_spearman_undefined_cases():
    assert math.isnan(spearman([0.1, 0.2], [0.3, 0.1]))  # fewer than 3 points
    assert math.isnan(spearman([0.1, 0.1, 0.1], [0.3, 0.1, 0.2]))  # constant spread
    assert spearman([0.1, 0.2, 0.3], [-0.01, 0.02, -0.05]) == pytest.approx(1.0)


def test_calibration_curve_by_hand():
    # unit spreads, errors 0.5 and -1.5: inside once z >= 0.5 and z >= 1.5
    expected, observed = calibration_curve([1.0, 1.0], [0.5, -1.5])
    assert len(expected) == 101 and expected[0] == 0 and expected[-1] == 1
    z = {p: NormalDist().inv_cdf((1 + p) / 2) for p in (0.3, 0.5, 0.9)}
    assert z[0.3] < 0.5 < z[0.5] < 1.5 < z[0.9]
    by_p = dict(zip(np.round(expected, 2), observed, strict=True))
    assert (by_p[0.0], by_p[0.3], by_p[0.5], by_p[0.9], by_p[1.0]) == (0, 0, 0.5, 1, 1)


def test_miscalibration_area_extremes_by_hand():
    # zero errors lie in every interval: observed 1 from p = 0, area = integral of (1 - p)
    assert miscalibration_area([0.1, 0.2, 0.3], [0.0, 0.0, 0.0]) == pytest.approx(0.5)
    # zero spreads with nonzero errors lie in none but the infinite one (p = 1): the gap is
    # -p up to p = 0.99, then closes linearly to 0 at p = 1
    area = miscalibration_area(np.zeros(4), [0.1, -0.2, 0.3, 0.4])
    assert area == pytest.approx(0.99**2 / 2 + 0.01 * 0.99 / 2)


def test_area_between_integrates_a_sign_change_exactly():
    # a gap from +1 to -1 across one unit: two triangles of 1/4
    assert _area_between(np.array([0.0, 1.0]), np.array([1.0, -1.0])) == pytest.approx(0.5)
    assert _area_between(np.array([0.0, 1.0]), np.array([1.0, -3.0])) == pytest.approx(10 / 8)


def test_fit_scale_and_nll_by_hand():
    assert fit_scale([1.0, 2.0], [2.0, 2.0]) == pytest.approx(math.sqrt((4 + 1) / 2))
    nll = gaussian_nll([1.0, 2.0], [1.0, 0.0], scale=2.0)
    by_hand = (0.5 * math.log(2 * math.pi * 4) + 1 / 8 + 0.5 * math.log(2 * math.pi * 16)) / 2
    assert nll == pytest.approx(by_hand)


def test_zero_spreads_are_floored_and_counted():
    spread, error = np.array([0.0, 0.1, 0.2]), np.array([1e-6, 0.05, -0.1])
    nll = gaussian_nll(spread, error)
    assert nll == pytest.approx(gaussian_nll([SPREAD_FLOOR, 0.1, 0.2], error))
    assert 1e5 < nll < math.inf  # 1e-6 eV off with a spread of 1e-9: huge, but a number
    assert fit_scale(spread, error) > 1e2
    metrics = calibration_metrics(spread, error)
    assert metrics["n_spread_floored"] == 1
    assert math.isfinite(metrics["nll"])


def test_calibration_metrics_keys_and_json():
    spread, error = calibrated(seed=6)
    metrics = calibration_metrics(spread, error, scale=1.5)
    assert metrics["n"] == N and metrics["scale"] == 1.5
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(error**2)))
    assert metrics["mean_spread"] == pytest.approx(np.mean(spread))
    assert metrics["nll"] == pytest.approx(gaussian_nll(spread, error, 1.5))
    assert metrics["miscalibration_area"] < 0.02 < metrics["miscalibration_area_scaled"]
    assert metrics["fitted_scale"] == pytest.approx(1.0, rel=0.03)
    # calibrated errors reach the Spearman that errors drawn from the spreads reach
    assert metrics["spearman"] == pytest.approx(metrics["spearman_ideal"], abs=0.03)
    assert calibration_metrics(spread, error)["scale"] == 1.0
    # nan (two points: no rank correlation) becomes None, and the dict is valid JSON
    small = calibration_metrics([0.1, 0.2], [0.1, -0.1])
    assert small["spearman"] is None and small["spearman_ideal"] is None
    empty = calibration_metrics(np.zeros(0), np.zeros(0))
    assert empty["n"] == 0 and empty["nll"] is None and empty["miscalibration_area"] is None
    assert set(empty) == set(metrics)
    for value in (metrics, small, empty):
        json.dumps(value, allow_nan=False)


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="one spread per error"):
        spearman(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="negative spread"):
        calibration_metrics([0.1, -0.1, 0.2], [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        miscalibration_area([0.1, np.nan], [0.0, 0.1])
    with pytest.raises(ValueError, match="scale"):
        gaussian_nll([0.1], [0.1], scale=0.0)
    with pytest.raises(ValueError, match="n_points"):
        calibration_curve([0.1], [0.1], n_points=1)


def test_committee_calibration_fits_the_scale_on_validation_energies_only():
    rng = np.random.default_rng(10)
    val_std, test_std = rng.uniform(0.01, 0.1, 5000), rng.uniform(0.01, 0.1, 5000)
    forces_std = rng.uniform(0.05, 0.5, (2000, 3))
    # energy spreads 2x too small on both energy sets, force spreads 5x too small
    val = (val_std, 2 * val_std * rng.standard_normal(5000))
    test = (test_std, 2 * test_std * rng.standard_normal(5000))
    forces = (forces_std, 5 * forces_std * rng.standard_normal((2000, 3)))
    result = committee_calibration(val, test, forces)
    assert result["scale"] == pytest.approx(2.0, rel=0.05)
    assert result["scale"] == result["validation_energy"]["fitted_scale"]
    assert result["scale_fitted_on"] == "validation energies"
    energy, force = result["energy"], result["forces"]
    assert energy["scale"] == force["scale"] == result["scale"]
    assert energy["miscalibration_area_scaled"] < 0.03 < 0.2 < energy["miscalibration_area"]
    assert energy["nll"] == pytest.approx(energy["nll_ideal"], abs=0.05)
    # the energies' factor does not repair the forces, and the forces' own factor says so
    assert force["n"] == 6000 and force["fitted_scale"] == pytest.approx(5.0, rel=0.05)
    assert force["miscalibration_area_scaled"] > 0.1
    json.dumps(result, allow_nan=False)


def test_committee_calibration_without_validation_energies_leaves_spreads_unscaled():
    spread, error = calibrated(seed=11)
    result = committee_calibration(None, (spread, error), None)
    assert result["scale"] is None and result["scale_fitted_on"] is None
    assert result["energy"]["scale"] == 1.0
    assert result["energy"]["nll"] == pytest.approx(gaussian_nll(spread, error))
    assert result["forces"]["n"] == 0 and result["validation_energy"]["n"] == 0
    # validation errors all exactly zero: no factor to fit, the spreads stay as they are
    exact = committee_calibration((np.full(3, 0.1), np.zeros(3)), (spread, error), None)
    assert exact["scale"] is None and exact["energy"]["scale"] == 1.0


def test_plot_calibration_writes_a_png(tmp_path):
    energies = calibrated(seed=7)
    spread = np.abs(np.random.default_rng(8).normal(0.05, 0.02, (30, 3)))
    forces = (spread.ravel(), np.random.default_rng(9).normal(0, 0.1, 90))
    forces[0][0] = 0.0  # a zero spread cannot be drawn on the log axes: left out
    path = tmp_path / "calibration.png"
    plot_calibration(
        path,
        {"test energies (eV)": energies, "force components (eV/A)": forces,
         "empty": (np.zeros(0), np.zeros(0))},
        title="committee",
    )  # fmt: skip
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.png"]  # no temporaries
