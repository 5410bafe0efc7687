"""Fine-tuning from a checkpoint: what may start a run, and its weights."""

import pytest
import torch

from pilip.errors import PilipError
from pilip.potential.checkpoint import read_checkpoint as init_checkpoint
from pilip.potential.checkpoint import save_checkpoint
from pilip.potential.models import build_model
from pilip.potential.recipes.base import state_dict_in
from pilip.potential.recipes.finetune import check_compatible

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


def test_init_weights_are_the_checkpoints_in_the_runs_dtype(checkpoint):
    path, original = checkpoint
    weights = state_dict_in(init_checkpoint(path)["model"]["state_dict"], "float32")
    for key, value in original.state_dict().items():
        assert weights[key].dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        torch.testing.assert_close(weights[key].double(), value.double(), atol=1e-6, rtol=1e-6)


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
