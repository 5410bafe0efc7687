"""Recipes are one extension point: a recipe registered here, and nowhere else, trains, saves,
loads and evaluates through pilip's own commands."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from test_train import write_dataset

from pilip.cli import main
from pilip.errors import PilipError
from pilip.potential import recipes
from pilip.potential.checkpoint import load_model, read_checkpoint
from pilip.potential.data import TRAIN, VAL, load_dataset
from pilip.potential.evaluate import predict
from pilip.potential.recipes import Recipe, RunPlan
from pilip.potential.train_config import TrainConfig, setting

torch.set_num_threads(1)
TINY = ["--n-features", "8", "--n-interactions", "1", "--cutoff", "4.0", "--no-progress"]


@dataclass
class ScaledSettings:
    scaled: float | None = setting(None, "train on energies divided by this factor")


class ScaledEnergy(torch.nn.Module):
    """The potential of a ``scaled`` checkpoint: ``factor`` times the network's energy."""

    def __init__(self, model: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, batch: dict) -> torch.Tensor:
        return self.factor * self.model(batch)


class Scaled(Recipe):
    """A toy recipe: the network learns E / factor; the checkpoint stands for factor x network."""

    name: ClassVar[str] = "scaled"
    settings: ClassVar[type] = ScaledSettings
    wraps_inference: ClassVar[bool] = True

    def check(self, plan: RunPlan) -> None:
        if not self.options["scaled"] > 0:
            raise PilipError(f"--scaled {self.options['scaled']}: must be > 0")

    def prepare(self, plan: RunPlan) -> None:
        factor = self.options["scaled"]
        plan.data = {k: replace(s, energy=s.energy / factor) for k, s in plan.data.items()}
        plan.records.append({"name": self.name, "factor": factor})

    @classmethod
    def inference_model(cls, model: Any, record: dict, source: str) -> Any:
        return ScaledEnergy(model, record["factor"])

    @classmethod
    def describe(cls, record: dict) -> str:
        return f"scaled by {record['factor']}"


@pytest.fixture
def scaled_recipe(monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "scaled", Scaled)


def test_a_recipe_registered_in_a_test_trains_saves_loads_and_evaluates(tmp_path, scaled_recipe):
    dataset = tmp_path / "water.parquet"
    write_dataset(dataset)
    run = tmp_path / "run"
    args = [
        "train",
        str(dataset),
        "--out",
        str(run),
        *TINY,
        "--epochs",
        "3",
        "--dtype",
        "float64",
        "--scaled",
        "4",
    ]
    assert main(args) == 0
    meta = read_checkpoint(run / "model.pt")["meta"]
    assert meta["recipes"] == [{"name": "scaled", "factor": 4.0}]
    model, meta = load_model(run / "model.pt")
    assert isinstance(model, ScaledEnergy)
    # the loop selected the network on E / 4: the checkpoint's potential is 4x that
    val = load_dataset(dataset)[VAL]
    predicted, _ = predict(model, val, torch.device("cpu"))
    best = read_checkpoint(run / "model.pt")["meta"]["val_energy_rmse"]
    rmse = float(np.sqrt(np.mean((predicted - val.energy.numpy()) ** 2)))
    assert rmse == pytest.approx(4 * best, rel=1e-5)
    out = tmp_path / "results"
    assert main(["evaluate", str(run / "model.pt"), str(dataset), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == "scaled by 4.0"
    assert main([*args[:3], str(tmp_path / "bad"), *args[4:-1], "0"]) == 2  # its own check


def test_the_recipe_settings_become_options_and_variant_keys(tmp_path, scaled_recipe, capsys):
    from pilip.config import load_schema, validate_config

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--scaled" in capsys.readouterr().out
    variant = load_schema()["properties"]["training"]["properties"]["variants"]
    assert "scaled" in variant["additionalProperties"]["propertyNames"]["enum"]
    config = {"training": {"variants": {"s": {"scaled": 2.0}}}}
    assert validate_config(config)["training"]["variants"]["s"] == {"scaled": 2.0}
    with pytest.raises(PilipError, match="expected number"):
        validate_config({"training": {"variants": {"s": {"scaled": "big"}}}})


def test_plain_runs_record_the_plain_recipe_and_unknown_recipes_are_refused(tmp_path):
    dataset = tmp_path / "water.parquet"
    write_dataset(dataset)
    run = tmp_path / "run"
    assert main(["train", str(dataset), "--out", str(run), *TINY, "--epochs", "1"]) == 0
    assert read_checkpoint(run / "model.pt")["meta"]["recipes"] == [{"name": "plain"}]
    assert recipes.describe({"recipes": [{"name": "plain"}]}) == "plain"
    with pytest.raises(PilipError, match="unknown training recipe 'future'"):
        recipes.inference_model(None, {"recipes": [{"name": "future"}]}, "x.pt")


def test_data_of_a_recipe_reaches_the_loop_untouched_by_it(tmp_path, scaled_recipe):
    """The loop fits the per-element shifts to the recipe's targets: E / 4 here."""
    dataset = tmp_path / "water.parquet"
    write_dataset(dataset)
    data = load_dataset(dataset)
    plan = RunPlan(TrainConfig(), data, dataset, tmp_path)
    recipe = recipes.select({"scaled": 4.0})
    assert [type(r) for r in recipe] == [Scaled]
    recipe[0].prepare(plan)
    torch.testing.assert_close(plan.data[TRAIN].energy, data[TRAIN].energy / 4)
