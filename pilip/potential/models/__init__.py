"""Energy models by name: ``build_model("painn", n_features=64)``.

Every model is an ``nn.Module`` from a batch dict to per-structure energies (n_struct,) in eV
(per-element shifts included) that builds its own neighbour list from the positions; forces
come from ``pilip.potential.forces.energy_and_forces``. Each model file holds a ``@dataclass`` of
hyper-parameters and the module.

:data:`MODELS` is the one registry of architectures: the CLI's ``--model`` choices, the config
schema's ``training.model`` and every check read it. It names each model's classes by import
path, so reading the names imports no torch (the config schema is loaded by every command and
by the Snakefile). A new architecture is one file here and one line in :data:`MODELS`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
from typing import Any

from pilip.errors import PilipError

# name -> "module:ConfigDataclass:Module"
MODELS: dict[str, str] = {
    "painn": "pilip.potential.models.painn:PaiNNConfig:PaiNN",
    "schnet": "pilip.potential.models.schnet:SchNetConfig:SchNet",
    "mace": "pilip.potential.models.mace:MACEConfig:MACE",  # needs the mace extra
}
# name -> (the module a model needs beyond pilip's dependencies, the pilip extra that brings it)
EXTRAS: dict[str, tuple[str, str]] = {"mace": ("mace", "mace")}


def model_classes(name: str) -> tuple[type, type]:
    """(hyper-parameter dataclass, module class) of model ``name``."""
    if name not in MODELS:
        raise PilipError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}")
    module, config_name, model_name = MODELS[name].split(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, config_name), getattr(loaded, model_name)


def hyperparameter_names(name: str) -> tuple[str, ...]:
    """The hyper-parameters of model ``name`` (its dataclass's fields: the keys ``model_params``
    may hold), read from the model file's source without importing it: the config check that
    every command and the Snakefile run imports no torch (nor mace-torch, which may be absent).
    """
    if name not in MODELS:
        raise PilipError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}")
    module, config_name, _ = MODELS[name].split(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise PilipError(f"model {name!r}: its module {module} is not installed")
    with open(spec.origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=spec.origin)
    body = next(
        node.body
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == config_name
    )
    return tuple(
        node.target.id
        for node in body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    )


def missing_extra(name: str) -> str | None:
    """Why model ``name`` cannot be built in this environment (a one-line hint naming the pip
    extra to install), or None when it can; imports nothing."""
    if name not in EXTRAS:
        return None
    module, extra = EXTRAS[name]
    if importlib.util.find_spec(module) is not None:
        return None
    return (
        f"model {name} needs the {extra} extra (its module {module} is not installed): "
        f"pip install 'pilip[{extra}]'"
    )


def model_config(name: str, **hparams: object) -> object:
    """The hyper-parameter dataclass of model ``name`` with ``hparams`` overriding defaults."""
    config_cls, _ = model_classes(name)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise PilipError(
            f"unknown hyper-parameter(s) {', '.join(unknown)} for model {name!r}: "
            f"valid ones are {', '.join(sorted(known))}"
        )
    if "dtype" in hparams and hparams["dtype"] not in ("float32", "float64"):
        raise PilipError(f"model dtype {hparams['dtype']!r}: use 'float32' or 'float64'")
    return config_cls(**hparams)


def build_model(name: str, **hparams: object) -> Any:
    """A freshly initialised model ``name`` (a key of :data:`MODELS`); see its dataclass."""
    config = model_config(name, **hparams)
    return model_classes(name)[1](config)


def data_hparams(name: str, hparams: dict[str, Any], structures: Any) -> dict[str, Any]:
    """``hparams`` completed with those model ``name`` reads off its training ``structures``
    (a ``pilip.potential.data.Structures``) where not given: MACE's ``elements`` and
    ``avg_num_neighbors`` (the module's ``data_defaults``); other models take none."""
    module_class = model_classes(name)[1]
    if not hasattr(module_class, "data_defaults"):
        return dict(hparams)
    found = module_class.data_defaults(
        hparams, structures.numbers, structures.n_atoms, structures.positions
    )
    return {**hparams, **found}


def __getattr__(name: str) -> Any:  # the classes, imported on first use
    for spec in MODELS.values():
        module, config_name, model_name = spec.split(":")
        if name in (config_name, model_name):
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EXTRAS",
    "MODELS",
    "build_model",
    "data_hparams",
    "hyperparameter_names",
    "missing_extra",
    "model_classes",
    "model_config",
]
