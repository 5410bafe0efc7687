"""Fine-tuning from a checkpoint: architecture and weights kept, per-element energies refitted."""

import numpy as np
import pytest
import torch
from model_batches import molecules

from pilip.checkpoint import save_checkpoint
from pilip.data import structures_from_arrays
from pilip.errors import PilipError
from pilip.finetune import (
    check_compatible,
    init_checkpoint,
    model_from_init,
    network_energies,
    refit_energy_shifts,
)
from pilip.forces import energy_and_forces
from pilip.models import build_model

torch.set_num_threads(1)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("painn", n_features=16, n_rbf=8, n_interactions=2, dtype="float64")
    model.energy_shift.shift[1] = -13.6
    model.energy_shift.shift[6] = -1029.0
    model.energy_shift.shift[8] = -2040.0
    path = tmp_path / "pretrained.pt"
    meta = {"config": {}, "elements": [1, 6, 8]}
    save_checkpoint(path, model=model, model_name="painn", meta=meta)
    return path, model.eval()


def structures_of(atoms_list, energy=None):
    return structures_from_arrays(
        [a.numbers for a in atoms_list], [a.positions for a in atoms_list], energy
    )


def predictions(model, s):
    batch = s.batch(torch.arange(len(s)))
    return energy_and_forces(model, batch)


def test_labels_that_are_the_checkpoints_own_predictions_start_exactly_there(checkpoint):
    path, original = checkpoint
    s = structures_of(molecules(("CH3CH2OH", "H2O", "CH4", "C2H6", "CH3OH")))
    energy, forces = predictions(original, s)
    model = model_from_init(init_checkpoint(path))
    change = refit_energy_shifts(model, s, energy)
    assert np.abs(change).max() < 1e-8
    new_energy, new_forces = predictions(model.eval(), s)
    torch.testing.assert_close(new_energy, energy, atol=1e-8, rtol=0)
    torch.testing.assert_close(new_forces, forces, atol=1e-12, rtol=0)


def test_refit_absorbs_per_element_offsets_and_keeps_the_network(checkpoint):
    """Labels of another level (the pretrained one's plus per-element offsets, as between
    xTB and DFT totals) give shifts that differ by exactly those offsets; forces unchanged."""
    path, original = checkpoint
    atoms = molecules(("CH3CH2OH", "H2O", "CH4", "C2H6", "CH3OH", "HCOOH"))
    s = structures_of(atoms)
    energy, forces = predictions(original, s)
    offsets = {1: -400.0, 6: -25000.0, 8: 1234.5}
    shifted = energy + torch.tensor(
        [sum(offsets[int(z)] for z in a.numbers) for a in atoms], dtype=torch.float64
    )
    model = model_from_init(init_checkpoint(path))
    change = refit_energy_shifts(model, s, shifted)
    for z, offset in offsets.items():
        assert change[z] == pytest.approx(offset, abs=1e-6)
    new_energy, new_forces = predictions(model.eval(), s)
    torch.testing.assert_close(new_energy, shifted, atol=1e-6, rtol=0)
    torch.testing.assert_close(new_forces, forces, atol=1e-12, rtol=0)
    torch.testing.assert_close(network_energies(model, s), network_energies(original, s))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"model": "schnet", "model_params": {}, "elements": [1, 6]}, ["painn", "--model"]),
        (
            {"model": None, "model_params": {"n_features": 64}, "elements": [1, 6]},
            ["n_features 64", "checkpoint: 16"],
        ),
        ({"model": None, "model_params": {}, "elements": [1, 6, 7]}, ["also have N"]),
    ],
)
def test_incompatible_init_is_a_one_line_error(checkpoint, kwargs, words):
    path, _ = checkpoint
    with pytest.raises(PilipError) as info:
        check_compatible(init_checkpoint(path), path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "--init" in message
    for word in words:
        assert word in message


def test_the_checkpoints_own_architecture_passes(checkpoint):
    path, _ = checkpoint
    check_compatible(
        init_checkpoint(path), path, model="painn", model_params={"n_features": 16},
        elements=[1, 8],
    )  # fmt: skip


def test_init_must_be_a_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(PilipError, match="not a pilip checkpoint"):
        init_checkpoint(bad)
