"""Energy and force error metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from pilip.potential.metrics import energy_metrics, force_metrics


def test_energy_metrics_by_hand():
    # errors +0.3, -0.4 eV on structures of 3 and 2 atoms
    result = energy_metrics(
        predicted=np.array([-10.0, 5.6]), reference=np.array([-10.3, 6.0]), n_atoms=[3, 2]
    )
    assert result["energy_rmse"] == pytest.approx(math.sqrt((0.09 + 0.16) / 2))
    assert result["energy_mae"] == pytest.approx(0.35)
    # per atom: +100 and -200 meV/atom
    assert result["energy_rmse_mev_per_atom"] == pytest.approx(math.sqrt((100**2 + 200**2) / 2))
    assert result["energy_mae_mev_per_atom"] == pytest.approx(150.0)
    assert result["n_energy"] == 2


def test_energy_metrics_empty_and_bad_shapes():
    empty = energy_metrics(np.zeros(0), np.zeros(0), np.zeros(0))
    assert empty["energy_rmse"] is None and empty["n_energy"] == 0
    with pytest.raises(ValueError, match="shapes differ"):
        energy_metrics(np.zeros(2), np.zeros(3), np.ones(2))


def test_force_metrics_by_hand_overall_and_per_element():
    numbers = np.array([8, 1, 1])
    reference = np.zeros((3, 3))
    predicted = np.array([[0.3, 0.0, -0.4], [1.0, 0.0, 0.0], [0.0, -2.0, 0.0]])
    result = force_metrics(predicted, reference, numbers, n_structures=1)
    # nine components, squared errors sum 0.09 + 0.16 + 1 + 4 = 5.25
    assert result["force_rmse"] == pytest.approx(math.sqrt(5.25 / 9))
    assert result["force_mae"] == pytest.approx((0.3 + 0.4 + 1.0 + 2.0) / 9)
    assert result["force_rmse_per_element"]["O"] == pytest.approx(math.sqrt(0.25 / 3))
    assert result["force_rmse_per_element"]["H"] == pytest.approx(math.sqrt(5.0 / 6))
    assert result["force_mae_per_element"]["H"] == pytest.approx(3.0 / 6)
    assert set(result["force_rmse_per_element"]) == {"O", "H"}
    assert result["n_force_structures"] == 1
    assert result["n_force_components"] == 9


def test_force_metrics_match_numpy_on_random_data():
    rng = np.random.default_rng(0)
    numbers = rng.choice([1, 6, 8], size=40)
    reference = rng.normal(size=(40, 3))
    predicted = reference + rng.normal(scale=0.1, size=(40, 3))
    result = force_metrics(predicted, reference, numbers, n_structures=4)
    diff = (predicted - reference).ravel()
    assert result["force_rmse"] == pytest.approx(np.sqrt(np.mean(diff**2)), rel=1e-12)
    assert result["force_mae"] == pytest.approx(np.mean(np.abs(diff)), rel=1e-12)
    carbon = (predicted - reference)[numbers == 6]
    assert result["force_rmse_per_element"]["C"] == pytest.approx(np.sqrt(np.mean(carbon**2)))


def test_force_metrics_empty():
    result = force_metrics(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, int), n_structures=0)
    assert result["force_rmse"] is None
    assert result["force_rmse_per_element"] == {}
    assert result["n_force_components"] == 0
