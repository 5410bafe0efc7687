"""Every training setting is declared once (TrainConfig and the recipes' settings): the CLI,
the config schema and config.yaml follow the declarations, or these tests fail."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pilip.config import load_config, load_schema
from pilip.errors import PilipError
from pilip.potential.models import MODELS
from pilip.potential.recipes import recipe_settings, student_settings
from pilip.potential.terms import TERM_NAMES
from pilip.potential.train_config import TrainConfig, default_of, training_values

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_KEYS = {"unlabelled", "threads", "mem_mb", "runtime", "gpus", "variants"}


def train_help() -> str:
    from pilip.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices["train"].format_help()


def test_every_cli_setting_is_an_option_whose_help_shows_its_default():
    text = " ".join(train_help().split())
    for spec in dataclasses.fields(TrainConfig):
        if not spec.metadata["cli"]:
            continue
        option = "--" + spec.name.replace("_", "-")
        default = default_of(spec)
        shown = ",".join(default) if isinstance(default, list) else str(default)
        shown = "none" if default is None else shown
        assert re.search(rf"{option}\b.*?\(default: {re.escape(shown)}\)", text), option
    for settings in recipe_settings():
        for spec in dataclasses.fields(settings):
            assert "--" + spec.name.replace("_", "-") in text


def test_the_schema_training_section_is_the_declarations():
    training = load_schema()["properties"]["training"]["properties"]
    for spec in dataclasses.fields(TrainConfig):
        assert training[spec.name]["default"] == default_of(spec), spec.name
    assert set(training) == {f.name for f in dataclasses.fields(TrainConfig)} | WORKFLOW_KEYS
    assert training["model"]["enum"] == list(MODELS)
    assert training["losses"]["items"]["enum"] == list(TERM_NAMES)
    variant = training["variants"]["additionalProperties"]["propertyNames"]["enum"]
    recipe_keys = {
        f.name
        for s in (*recipe_settings(), student_settings())
        for f in dataclasses.fields(s)
        if f.metadata["config"]
    }
    expected = {f.name for f in dataclasses.fields(TrainConfig)} | recipe_keys | {"unlabelled"}
    assert set(variant) == expected
    assert {"baseline", "init"} <= recipe_keys and "baseline_labels" not in variant
    # a distilled student's keys: its teacher and weight, not the files a rule passes
    assert {"teacher", "reference_weight"} <= set(variant)
    assert "reference_dataset" not in variant


def test_config_yaml_documents_every_training_key():
    """config.yaml (the embedded default) names every training setting with a comment."""
    lines = (REPO / "config.yaml").read_text().splitlines()
    start = lines.index("training:")
    keys = {}
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        match = re.match(r"^  ([a-z_]+):(.*)$", line)
        if match:
            keys[match.group(1)] = match.group(2)
    assert set(keys) == {f.name for f in dataclasses.fields(TrainConfig)} | WORKFLOW_KEYS
    assert all("#" in comment for comment in keys.values())


def test_the_variant_keys_are_typed_and_bounded_like_training():
    config = load_config(REPO / "config.yaml")
    with pytest.raises(PilipError, match=r"training.variants.energy.eps: must be > 0"):
        from pilip.config import validate_config

        bad = {**config, "training": {**config["training"]}}
        bad["training"]["variants"] = {"energy": {"eps": 0}}
        validate_config(bad)


def test_defaults_config_variant_and_options_merge_in_that_order():
    study = {
        "training": {
            "lr": 0.1,
            "epochs": 5,
            "losses": ["energy"],
            "unlabelled": "u.parquet",
            "model_params": {"cutoff": 4.0},
            "variants": {"v": {"epochs": 7, "baseline": "gfn2-xtb", "model_params": {"n": 2}}},
        }
    }
    values, unlabelled = training_values(study, "v", {"epochs": 9})
    assert values["lr"] == 0.1 and values["epochs"] == 9 and values["baseline"] == "gfn2-xtb"
    assert values["model_params"] == {"cutoff": 4.0, "n": 2}
    assert unlabelled is None  # training.unlabelled feeds the weak variants only
    _, unlabelled = training_values(study, "v", {"losses": "energy,pitc"})
    assert unlabelled == "u.parquet"
    with pytest.raises(PilipError, match="no 'w'"):
        training_values(study, "w", {})


def test_the_weak_loss_defaults_are_those_of_train_config():
    from pilip.potential.losses import WeakLossOptions

    with pytest.raises(TypeError):
        WeakLossOptions()  # no defaults of its own
    assert TrainConfig().weak_options() == WeakLossOptions(eps=0.01, k=0.5)


def test_loading_the_schema_imports_no_torch():
    """Every command and the Snakefile load the schema: it must stay cheap."""
    code = "import sys, pilip.config as c; c.load_schema(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
