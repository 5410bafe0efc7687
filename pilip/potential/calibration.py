"""How well a committee's spread predicts its errors: rank correlation, calibration, likelihood.

Every function takes two arrays of the same shape (flattened, so each entry is one point):

* ``spread``: the predicted uncertainty of each point, a standard deviation (>= 0), e.g. a
  committee's ``energy_std`` per structure (eV) or ``forces_std`` per force component (eV/A);
* ``error``: prediction minus reference of the same points, in the same unit.

The probabilistic metrics read ``spread`` as the standard deviation of a Gaussian centred on the
prediction, ``error ~ N(0, spread**2)``, the reading of Tran et al., Mach. Learn.: Sci. Technol.
1, 025006 (2020) (uncertainty-toolbox) and Tan et al., npj Comput. Mater. 9, 225 (2023):

* :func:`spearman`: do larger spreads go with larger ``|error|``? (ranking only, unit-free);
* :func:`miscalibration_area`: do the Gaussian intervals contain the fraction of errors they
  promise? (0 calibrated, 0.5 the worst);
* :func:`gaussian_nll`: the mean negative log-likelihood of the errors, which rewards spreads
  that are both calibrated and small; after one scale factor (:func:`fit_scale`) fitted by
  the caller on validation data;
* :func:`calibration_metrics`: all of them as one JSON-ready dict;
  :func:`committee_calibration`: validation energies, test energies and force components in
  one dict, the scale fitted on the validation energies only.

Pure numpy and the standard library. docs/uncertainty.md says how to read the numbers.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

# Spreads below this (in the unit of the input: eV or eV/A) count as this in fit_scale and
# gaussian_nll, so that a zero spread (identical committee members, a component that symmetry
# keeps zero in every member) gives a large finite NLL instead of inf or nan; calibration_metrics
# counts the floored points (n_spread_floored).
SPREAD_FLOOR = 1e-9

# Expected coverages of the calibration curve: p = 0, 0.01, ..., 1 (uncertainty-toolbox uses 100
# points from 0 to 1). The interior 99 are in (0, 1); at p = 0 the interval is empty and at
# p = 1 it is the whole line, so the ends hold by construction for continuous errors.
N_COVERAGE_POINTS = 101

# A seeded draw of errors from the spreads themselves gives the Spearman a perfectly calibrated
# committee with these spreads would reach (Rasmussen et al., J. Cheminform. 15, 121 (2023)).
IDEAL_SEED = 0


def _points(spread: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as flat float64, or ValueError naming what is wrong."""
    spread = np.asarray(spread, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    if spread.shape != error.shape:
        raise ValueError(
            f"spread has shape {spread.shape} but error {error.shape}; give one spread per "
            "error (flatten force components the same way in both)"
        )
    spread, error = spread.reshape(-1), error.reshape(-1)
    if not (np.all(np.isfinite(spread)) and np.all(np.isfinite(error))):
        raise ValueError("spread and error must be finite; a nan or inf came from the model")
    if np.any(spread < 0):
        raise ValueError(
            f"{int(np.sum(spread < 0))} negative spread(s): a spread is a standard deviation"
        )
    return spread, error


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties sharing the mean of their ranks (as scipy's rankdata)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], len(values))  # one past each tie group
    ranks = np.empty(len(values))
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(starts_group) - 1]
    return ranks


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3:
        return math.nan
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float(np.dot(rx, rx)) * float(np.dot(ry, ry)))
    return float(np.dot(rx, ry) / norm) if norm > 0 else math.nan


def spearman(spread: np.ndarray, error: np.ndarray) -> float:
    """Spearman rank correlation of ``spread`` with ``|error|`` (ties take average ranks).

    1: the larger the spread the larger the error, 0: the spread says nothing about the error.
    nan for fewer than 3 points or when either ranking is constant.
    """
    spread, error = _points(spread, error)
    return _rank_correlation(spread, np.abs(error))


def _normalised(spread: np.ndarray, error: np.ndarray) -> np.ndarray:
    """``|error| / spread``; a zero spread gives 0 for a zero error and inf otherwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(error) / spread
    return np.where(spread > 0, ratio, np.where(error == 0, 0.0, np.inf))


def calibration_curve(
    spread: np.ndarray, error: np.ndarray, n_points: int = N_COVERAGE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Expected vs observed coverage of the central Gaussian intervals.

    For each expected coverage p of ``n_points`` evenly spaced from 0 to 1 (both included; the
    default 101 is p = 0, 0.01, ..., 1), the observed coverage is the fraction of points with
    ``|error| <= z * spread``, z = the standard normal quantile of (1 + p) / 2 (z = 0 at p = 0,
    infinite at p = 1). A calibrated spread follows the diagonal; a curve above it means
    spreads too large (under-confident), below it too small (over-confident).

    Returns:
        ``expected`` and ``observed``, both (n_points,), fractions in [0, 1]; ``observed`` is
        all nan when there are no points.
    """
    if n_points < 2:
        raise ValueError(f"n_points={n_points}: the curve needs at least its two ends")
    spread, error = _points(spread, error)
    expected = np.linspace(0.0, 1.0, n_points)
    normal = NormalDist()
    z = np.array([normal.inv_cdf((1 + p) / 2) for p in expected[1:-1]])
    z = np.concatenate(([0.0], z, [np.inf]))
    if spread.size == 0:
        return expected, np.full(n_points, np.nan)
    ratios = np.sort(_normalised(spread, error))
    observed = np.searchsorted(ratios, z, side="right") / ratios.size
    return expected, observed


def _area_between(x: np.ndarray, gap: np.ndarray) -> float:
    """Integral of ``|gap|`` over ``x`` for the piecewise-linear ``gap``, sign changes inside a
    segment included (there the two triangles are integrated separately)."""
    a, b, width = gap[:-1], gap[1:], np.diff(x)
    same_sign = a * b >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = width * (a**2 + b**2) / (2 * (np.abs(a) + np.abs(b)))
    straight = width * (np.abs(a) + np.abs(b)) / 2
    return float(np.sum(np.where(same_sign, straight, crossing)))


def miscalibration_area(spread: np.ndarray, error: np.ndarray) -> float:
    """Area between the calibration curve (:func:`calibration_curve`, 101 points from 0 to 1)
    and the diagonal: 0 for calibrated spreads, at most 0.5 (every spread far too small or
    far too large). Sign changes of the gap inside a grid interval are integrated exactly for
    the piecewise-linear curve. nan when there are no points."""
    expected, observed = calibration_curve(spread, error)
    if np.isnan(observed).any():
        return math.nan
    return _area_between(expected, observed - expected)


def fit_scale(spread: np.ndarray, error: np.ndarray) -> float:
    """The factor s that maximises the Gaussian likelihood of ``error`` with std ``s * spread``.

    Closed form: ``s**2 = mean(error**2 / spread**2)`` (spreads floored at ``SPREAD_FLOOR``).
    s > 1: the spreads are too small. Fit it on validation data and pass it to
    :func:`gaussian_nll` on test data; fitted on the test data, it flatters the NLL there.
    nan when there are no points.
    """
    spread, error = _points(spread, error)
    if spread.size == 0:
        return math.nan
    sigma = np.maximum(spread, SPREAD_FLOOR)
    return float(np.sqrt(np.mean((error / sigma) ** 2)))


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale}: the spread scale factor must be finite and positive")
    return scale


def gaussian_nll(spread: np.ndarray, error: np.ndarray, scale: float = 1.0) -> float:
    """Mean negative log-likelihood per point of ``error`` under N(0, sigma**2).

    ``sigma = scale * max(spread, SPREAD_FLOOR)``; per point ``0.5 * log(2 pi sigma**2) +
    error**2 / (2 sigma**2)``, in nats. Lower is better; it depends on the unit of the inputs
    (an offset of log(1000) per point between eV and meV), so compare NLLs of one quantity
    only. nan when there are no points.
    """
    spread, error = _points(spread, error)
    scale = _check_scale(scale)
    if spread.size == 0:
        return math.nan
    sigma = scale * np.maximum(spread, SPREAD_FLOOR)
    return float(np.mean(0.5 * np.log(2 * np.pi * sigma**2) + error**2 / (2 * sigma**2)))


def _ideal_nll(spread: np.ndarray, scale: float) -> float:
    """Expected NLL if the errors were drawn from N(0, (scale * spread)**2)."""
    sigma = scale * np.maximum(spread, SPREAD_FLOOR)
    return float(np.mean(0.5 * np.log(2 * np.pi * sigma**2) + 0.5))


def _ideal_spearman(spread: np.ndarray) -> float:
    """Spearman of ``spread`` with errors drawn from N(0, spread**2) (seeded): the value a
    perfectly calibrated committee with these spreads would reach on this set."""
    draw = np.random.default_rng(IDEAL_SEED).standard_normal(spread.size) * spread
    return _rank_correlation(spread, np.abs(draw))


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def calibration_metrics(
    spread: np.ndarray, error: np.ndarray, scale: float | None = None
) -> dict[str, float | int | None]:
    """Every calibration figure of one set of points, JSON-ready (None where undefined).

    Args:
        spread: predicted standard deviations (eV or eV/A), any shape; see the module doc.
        error: prediction minus reference, same shape and unit.
        scale: the factor applied to the spreads for ``nll``, ``nll_ideal`` and
            ``miscalibration_area_scaled`` (fitted elsewhere, on validation data); None: 1.

    Returns:
        ``n``; ``spearman`` (spread vs ``|error|``) and ``spearman_ideal`` (what errors drawn
        from the spreads would give, seeded); ``miscalibration_area`` (raw spreads) and
        ``miscalibration_area_scaled``; ``scale`` (the factor used); ``nll`` (nats per point,
        with ``scale``) and ``nll_ideal`` (its expectation were the scaled spreads
        calibrated); ``fitted_scale`` (the factor this set itself would want); ``rmse`` of
        the errors and ``mean_spread`` (input unit); ``n_spread_floored`` (spreads below
        ``SPREAD_FLOOR``).
    """
    spread, error = _points(spread, error)
    used = 1.0 if scale is None else _check_scale(scale)
    n = int(spread.size)
    result: dict[str, float | int | None] = {"n": n, "scale": used}
    if n == 0:
        result.update(
            dict.fromkeys(
                (
                    "spearman",
                    "spearman_ideal",
                    "miscalibration_area",
                    "miscalibration_area_scaled",
                    "nll",
                    "nll_ideal",
                    "fitted_scale",
                    "rmse",
                    "mean_spread",
                )
            ),
            n_spread_floored=0,
        )
        return result
    values = {
        "spearman": spearman(spread, error),
        "spearman_ideal": _ideal_spearman(spread),
        "miscalibration_area": miscalibration_area(spread, error),
        "miscalibration_area_scaled": miscalibration_area(used * spread, error),
        "nll": gaussian_nll(spread, error, used),
        "nll_ideal": _ideal_nll(spread, used),
        "fitted_scale": fit_scale(spread, error),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mean_spread": float(np.mean(spread)),
    }
    result.update({key: _json_float(value) for key, value in values.items()})
    result["n_spread_floored"] = int(np.sum(spread < SPREAD_FLOOR))
    return result


def committee_calibration(
    val: tuple[np.ndarray, np.ndarray] | None,
    test_energy: tuple[np.ndarray, np.ndarray] | None,
    test_forces: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, object]:
    """The calibration of a committee on the sets ``pilip evaluate`` measures, JSON-ready.

    Args:
        val: ``(energy_std, energy_error)`` of the validation structures (the ``SELECT`` rows
            of pilip.rows), (n_val,) eV each: the one scale factor is fitted on them.
        test_energy: ``(energy_std, energy_error)`` of the test energies, (n_test,) eV each.
        test_forces: ``(forces_std, force_error)`` of the force-evaluation atoms, (n_atoms, 3)
            eV/A each (flattened here: one point per Cartesian component).
        None (or empty arrays) where a set is missing.

    Returns:
        ``scale``: :func:`fit_scale` on the validation energies, None without them (then the
        test NLLs are of the unscaled spreads and the sets' ``scale`` is 1);
        ``scale_fitted_on``: ``"validation energies"`` or None; ``validation_energy``,
        ``energy`` and ``forces``: :func:`calibration_metrics` of each set, the test sets with
        ``scale`` applied (so ``nll`` and ``miscalibration_area_scaled`` are the calibrated
        figures, and each set's ``fitted_scale`` says whether the validation energies' factor
        carries over to it).
    """
    empty = (np.zeros(0), np.zeros(0))
    validation = calibration_metrics(*(val or empty))
    # None without validation energies; 0 when they are all exactly right: nothing to scale by
    scale = validation["fitted_scale"] or None
    return {
        "scale": scale,
        "scale_fitted_on": "validation energies" if scale is not None else None,
        "validation_energy": validation,
        "energy": calibration_metrics(*(test_energy or empty), scale=scale),
        "forces": calibration_metrics(*(test_forces or empty), scale=scale),
    }
