"""The architecture of every run of a study, checked when the config is loaded (no torch):
model_params per model, and fine-tune variants against the pretraining run."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pilip.config import validate_config
from pilip.errors import PilipError
from pilip.potential import models
from pilip.potential.study_models import (
    PRETRAIN_MODEL,
    models_not_installed,
    run_architectures,
)
from pilip.potential.train_config import training_values

REPO = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def study(**variants) -> dict:
    config = copy.deepcopy(CONFIG)
    config["training"]["variants"].update(variants)
    return config


def test_hyperparameter_names_are_the_dataclass_fields():
    for name in models.MODELS:  # mace.py imports mace-torch only when a model is built
        config_cls, _ = models.model_classes(name)
        fields = tuple(f.name for f in dataclasses.fields(config_cls))
        assert models.hyperparameter_names(name) == fields, name


def test_a_mace_variant_of_a_painn_study_takes_maces_defaults_not_painns_params():
    config = validate_config(study(delta_mace={"baseline": "xtb", "model": "mace", "lr": 0.01}))
    runs = run_architectures(config)
    assert runs["energy"] == ("painn", CONFIG["training"]["model_params"])
    assert runs["delta_mace"] == ("mace", {})  # PaiNN's n_features etc. are not inherited
    assert runs["pretrain"] == runs["energy"]  # the pretraining run trains training.model
    own = study(m={"model": "mace", "model_params": {"correlation": 3}})
    assert run_architectures(validate_config(own))["m"] == ("mace", {"correlation": 3})
    # the same model: model_params merge key by key
    values, _ = training_values(study(w={"model_params": {"n_rbf": 8}}), "w", {})
    assert values["model_params"] == {**CONFIG["training"]["model_params"], "n_rbf": 8}
    # an option that changes the model brings its own model_params alone, too
    values, _ = training_values(CONFIG, "energy", {"model": "schnet"})
    assert values["model"] == "schnet" and values["model_params"] == {}


def test_a_mace_study_pretrains_and_fine_tunes_mace():
    config = copy.deepcopy(CONFIG)
    config["training"].update(model="mace", lr=0.01)
    runs = run_architectures(validate_config(config))
    assert {run: model for run, (model, _) in runs.items()} == {
        "energy": "mace", "weak": "mace", "delta": "mace", "finetune": "mace", "pretrain": "mace",
        "distilled": "mace",  # the student trains the study's model
    }  # fmt: skip


@pytest.mark.parametrize(
    ("variant", "words"),
    [
        (
            {"model": "mace", "init": PRETRAIN_MODEL},
            ["training.variants.v.model: mace", "training.model (painn)", "training.model: mace"],
        ),
        (
            {"init": PRETRAIN_MODEL, "model_params": {"n_features": 64}},
            ["training.variants.v.model_params: n_features", "pretraining run"],
        ),
        (
            {"model": "mace", "model_params": {"n_filters": 8}},
            ["training.variants.v.model_params", "mace (run v) has no hyper-parameter n_filters"],
        ),
    ],
)
def test_a_run_whose_architecture_cannot_be_is_refused_at_load(variant, words):
    with pytest.raises(PilipError) as info:
        validate_config(study(v=variant), source="my.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("my.yaml: ")
    for word in words:
        assert word in message


def test_painn_hyperparameters_in_training_are_refused_for_painn_only():
    config = copy.deepcopy(CONFIG)
    config["training"]["model_params"]["max_L"] = 2
    with pytest.raises(PilipError, match=r"training.model_params: painn .* max_L"):
        validate_config(config)


def test_without_the_cheap_level_init_is_the_users_checkpoint():
    config = study(v={"model": "mace", "init": PRETRAIN_MODEL})
    config["cheap_level"]["enabled"] = False
    assert "pretrain" not in run_architectures(validate_config(config))


def test_a_model_whose_extra_is_missing_is_named_with_its_pip_command(monkeypatch):
    config = validate_config(study(delta_mace={"baseline": "xtb", "model": "mace"}))
    monkeypatch.setitem(models.EXTRAS, "mace", ("no_such_module_xyz", "mace"))
    problem = models_not_installed(config)
    assert "delta_mace" in problem and "pip install 'pilip[mace]'" in problem
    assert "energy" not in problem
    monkeypatch.setitem(models.EXTRAS, "mace", ("json", "mace"))
    assert models_not_installed(config) is None


def test_the_check_imports_no_torch():
    code = (
        "import sys, yaml, pilip.config as c\n"
        "config = yaml.safe_load(open('config.yaml'))\n"
        "config['training']['variants']['m'] = {'model': 'mace', 'model_params': {'max_L': 2}}\n"
        "c.validate_config(config)\n"
        "print('torch' in sys.modules, 'mace' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "False False"
