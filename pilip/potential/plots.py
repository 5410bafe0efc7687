"""Plots of an evaluation: energy and force parity, learning curves, committee calibration
(PNG, matplotlib Agg).

Inputs are the predictions of :func:`pilip.potential.evaluate.evaluate_model` (eV, eV/A), a
training ``metrics.csv`` (pilip.potential.train) and committee spreads with their errors
(pilip.potential.calibration); every file is written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from pilip.atomic_io import atomic_path
from pilip.errors import PilipError
from pilip.potential.calibration import calibration_curve, miscalibration_area, spearman
from pilip.potential.metrics import rmse


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _parity_axes(ax, low: float, high: float) -> None:
    pad = 0.05 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.5", lw=1, zorder=0)
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_aspect("equal")


def plot_energy_parity(predictions: dict[str, np.ndarray], path: Path, title: str = "") -> None:
    """Predicted vs reference energies, each system shifted by its mean reference energy.

    Total energies of different molecules differ by thousands of eV; subtracting each system's
    mean reference energy (from both axes alike) keeps the parity line and the errors intact.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    pred, ref, systems = (predictions[k] for k in ("energy_pred", "energy_ref", "energy_system"))
    low, high = math.inf, -math.inf
    for system in sorted(set(systems.tolist())):
        mask = systems == system
        shift = ref[mask].mean()
        x, y = ref[mask] - shift, pred[mask] - shift
        label = f"{system} (RMSE {1000 * rmse(y - x):.1f} meV)"
        ax.scatter(x, y, s=12, alpha=0.8, label=label)
        low, high = min(low, x.min(), y.min()), max(high, x.max(), y.max())
    if math.isfinite(low):
        _parity_axes(ax, low, high)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no test energies", ha="center", transform=ax.transAxes)
    ax.set_xlabel("reference E - <E_ref>_system (eV)")
    ax.set_ylabel("predicted E - <E_ref>_system (eV)")
    ax.set_title(title or "Test-set energies")
    _save(fig, path)
    plt.close(fig)


def plot_force_parity(predictions: dict[str, np.ndarray], path: Path, title: str = "") -> None:
    """Predicted vs reference force components (eV/A), coloured by element."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    pred, ref, numbers = (predictions[k] for k in ("force_pred", "force_ref", "force_numbers"))
    for z in np.unique(numbers):
        mask = numbers == z
        x, y = ref[mask].ravel(), pred[mask].ravel()
        label = f"{chemical_symbols[int(z)]} (RMSE {rmse(y - x):.3f} eV/A)"
        ax.scatter(x, y, s=6, alpha=0.6, label=label)
    if len(numbers):
        _parity_axes(ax, min(ref.min(), pred.min()), max(ref.max(), pred.max()))
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5, 0.5, "no structures with reference forces", ha="center", transform=ax.transAxes
        )
    ax.set_xlabel("reference force component (eV/A)")
    ax.set_ylabel("predicted force component (eV/A)")
    ax.set_title(title or "Forces (never trained on)")
    _save(fig, path)
    plt.close(fig)


def plot_untrained(path: Path, recipe: str, title: str = "") -> None:
    """The learning-curve figure of a model that was not trained (the cheap level alone, an
    imported model): a panel that says so, so that every evaluated run has the same files."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
    ax.text(0.5, 0.5, f"no learning curve: {recipe}\n(no training log)", ha="center",
            va="center", fontsize=12, transform=ax.transAxes)  # fmt: skip
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    _save(fig, path)
    plt.close(fig)


def plot_learning_curve(log_path: Path, path: Path, title: str = "") -> None:
    """Training loss terms (left) and validation energy errors (right) per epoch.

    Reads a training ``metrics.csv``: columns ``train_*`` are the loss terms, ``val_*`` the
    validation metrics (those in meV/atom when present, else all), ``best`` marks the epochs
    whose weights were kept (the last one is drawn as a dotted line). Log scales; non-positive
    values are not drawn.
    """
    import pandas as pd

    log = pd.read_csv(log_path)
    x_name = "epoch" if "epoch" in log.columns else None
    x = log[x_name] if x_name else pd.Series(range(1, len(log) + 1))
    numeric = [c for c in log.columns if pd.api.types.is_numeric_dtype(log[c])]
    losses = [c for c in numeric if c.startswith("train_")]
    validation = [c for c in numeric if c.startswith("val_")]
    validation = [c for c in validation if c.endswith("_per_atom")] or validation
    if not losses and not validation:
        raise PilipError(f"{log_path}: no train_* or val_* columns to plot; is it a training log?")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
    for ax, columns, ylabel in (
        (axes[0], losses, "training loss term"),
        (axes[1], validation, "validation error"),
    ):
        for column in columns:
            values = log[column].where(log[column] > 0)
            if values.notna().any():
                ax.plot(x, values, label=column)
        if "best" in log.columns and (log["best"] == 1).any():
            ax.axvline(x[log["best"] == 1].iloc[-1], color="0.5", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel(x_name or "epoch")
        ax.set_ylabel(ylabel)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title or "Learning curves")
    _save(fig, path)
    plt.close(fig)


# at most this many points per set in the scatter panel of plot_calibration (a seeded subset):
# the force components of a large test set would take long to draw and hide each other
MAX_SCATTER_POINTS = 20000


def plot_calibration(
    path: Path,
    sets: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str = "",
) -> None:
    """Calibration of committee spreads, one curve and one point cloud per set.

    Args:
        path: the PNG to write.
        sets: label -> (spread, error), arrays of one shape (see pilip.potential.calibration),
            e.g. ``{"test energies (eV)": (energy_std, energy_error), "force components
            (eV/A)": (forces_std.ravel(), force_error.ravel())}``.
        title: the figure's title.

    Left: observed vs expected coverage of the Gaussian intervals with the diagonal, the
    miscalibration area in the legend. Right: ``|error|`` vs spread (log-log; points where
    either is zero are left out, and at most ``MAX_SCATTER_POINTS`` per set are drawn) with
    the line ``|error| = spread`` over the spreads drawn and the Spearman correlation in the legend.
    """
    plt = _pyplot()
    fig, (ax_curve, ax_scatter) = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
    ax_curve.plot([0, 1], [0, 1], color="0.5", lw=1, zorder=0)
    low, high = math.inf, -math.inf
    rng = np.random.default_rng(0)
    for label, (spread, error) in sets.items():
        expected, observed = calibration_curve(spread, error)
        spread = np.asarray(spread, dtype=np.float64).reshape(-1)
        size = np.abs(np.asarray(error, dtype=np.float64).reshape(-1))
        if not spread.size:
            ax_curve.plot([], [], label=f"{label} (no points)")
            continue
        area = miscalibration_area(spread, size)
        ax_curve.plot(expected, observed, label=f"{label} (area {area:.3f})")
        shown = (spread > 0) & (size > 0)
        x, y = spread[shown], size[shown]
        if x.size > MAX_SCATTER_POINTS:
            keep = rng.choice(x.size, size=MAX_SCATTER_POINTS, replace=False)
            x, y = x[keep], y[keep]
        rho = spearman(spread, size)
        ax_scatter.scatter(x, y, s=5, alpha=0.4, label=f"{label} (Spearman {rho:.2f})")
        if x.size:
            low, high = min(low, x.min()), max(high, x.max())
    ax_curve.set_xlim(0, 1)
    ax_curve.set_ylim(0, 1)
    ax_curve.set_aspect("equal")
    ax_curve.set_xlabel("expected fraction within the interval")
    ax_curve.set_ylabel("observed fraction within the interval")
    ax_curve.set_title("(a) calibration (above: spreads too large)", fontsize=9)
    if math.isfinite(low):
        ax_scatter.plot([low, high], [low, high], color="k", lw=1, ls="--", zorder=3)
        ax_scatter.set_xscale("log")
        ax_scatter.set_yscale("log")
    else:
        ax_scatter.text(0.5, 0.5, "no points with spread and error > 0", ha="center",
                        transform=ax_scatter.transAxes)  # fmt: skip
    ax_scatter.set_xlabel("committee spread (unit of each set)")
    ax_scatter.set_ylabel("|error| (unit of each set)")
    ax_scatter.set_title("(b) ranking: |error| vs spread", fontsize=9)
    for ax in (ax_curve, ax_scatter):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or "Committee uncertainty")
    _save(fig, path)
    plt.close(fig)
