"""Training recipes: the one extension point for new ways to train.

:data:`RECIPES` maps a name to its class (or its ``"module:Class"`` path, imported on first
use). A run uses every recipe whose settings it gives, in registry order (Delta and
fine-tuning combine: a Delta checkpoint fine-tuned over the same baseline), or ``plain`` when
it gives none. The contract: :mod:`pilip.potential.recipes.base`. A new recipe is one module
here (its settings, its checks, what it does to the run, what its checkpoint means) and one
line in :data:`RECIPES`; its settings become ``pilip train`` options and variant keys without
another edit.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from pilip.errors import PilipError
from pilip.potential.recipes.base import Recipe, RunPlan

RECIPES: dict[str, str | type[Recipe]] = {
    "plain": "pilip.potential.recipes.plain:Plain",
    "delta": "pilip.potential.recipes.delta:Delta",
    "finetune": "pilip.potential.recipes.finetune:Finetune",
    "distilled": "pilip.potential.recipes.distilled:Distilled",
}


def recipe_class(name: str) -> type[Recipe]:
    """The recipe registered as ``name``; one-line PilipError if there is none."""
    if name not in RECIPES:
        raise PilipError(
            f"unknown training recipe {name!r} (this pilip knows {', '.join(RECIPES)}); "
            "use the pilip version that wrote the checkpoint"
        )
    target = RECIPES[name]
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module), attribute)
    return target


def recipe_settings() -> list[type]:
    """The settings dataclasses of every registered recipe, in registry order."""
    return [cls.settings for cls in map(recipe_class, RECIPES) if cls.settings is not None]


def student_settings() -> type:
    """The settings of a distilled student (``pilip distill``; a variant with ``teacher:``)."""
    from pilip.potential.recipes.distilled import StudentSettings

    return StudentSettings


def recipe_options(values: dict[str, Any]) -> dict[str, Any]:
    """Of ``values`` (settings by name), those that belong to recipes (a student's included:
    ``pilip distill`` reads them, ``pilip train`` refuses them)."""
    every = [*recipe_settings(), student_settings()]
    names = {f.name for settings in every for f in dataclasses.fields(settings)}
    return {k: v for k, v in values.items() if k in names}


def select(options: dict[str, Any]) -> list[Recipe]:
    """The recipes a run with these recipe option values uses, in registry order (``plain``
    when no other is selected)."""
    chosen = []
    for name in RECIPES:
        cls = recipe_class(name)
        if cls.settings is not None and cls.selected(options):
            own = {f.name: options.get(f.name) for f in dataclasses.fields(cls.settings)}
            chosen.append(cls(own))
    return chosen or [recipe_class("plain")({})]


def recipe_records(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The recipe records of a checkpoint's ``meta`` (checkpoints before records existed kept
    ``baseline`` and ``init`` keys: read as the same records)."""
    if "recipes" in meta:
        return list(meta["recipes"])
    records = []
    if meta.get("baseline"):
        record = {"name": "delta", "baseline": meta["baseline"]}
        if meta.get("recipe") == "baseline_only":
            record["alone"] = True
        records.append(record)
    if meta.get("init"):
        records.append({"name": "finetune", "init": meta["init"]})
    return records or [{"name": "plain"}]


def inference_model(model: Any, meta: dict[str, Any], source: str, **inputs: Any) -> Any:
    """The potential a checkpoint stands for: its network wrapped by each recipe, in order
    (``inputs``: see ``Recipe.inference_model``)."""
    for record in recipe_records(meta):
        model = recipe_class(record["name"]).inference_model(model, record, source, **inputs)
    return model


def describe(meta: dict[str, Any]) -> str:
    """How a checkpoint's model came about, for reports (``plain``, ``Delta over GFN2-xTB
    (tblite 0.8.0), fine-tuned from PATH``, ``GFN2-xTB (...) alone``)."""
    return ", ".join(recipe_class(r["name"]).describe(r) for r in recipe_records(meta))


__all__ = [
    "RECIPES",
    "Recipe",
    "RunPlan",
    "describe",
    "inference_model",
    "recipe_class",
    "recipe_records",
    "recipe_settings",
    "select",
    "student_settings",
]
