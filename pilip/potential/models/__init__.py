"""Energy models by name: ``build_model("painn", n_features=64)``.

Every model is an ``nn.Module`` from a batch dict to per-structure energies (n_struct,) in eV
(per-element shifts included) that builds its own neighbour list from the positions; forces
come from ``pilip.potential.forces.energy_and_forces``. Each model file holds a ``@dataclass`` of
hyper-parameters and the module.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from pilip.errors import PilipError
from pilip.potential.models.painn import PaiNN, PaiNNConfig
from pilip.potential.models.schnet import SchNet, SchNetConfig

# name -> (config dataclass, module class)
MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "schnet": (SchNetConfig, SchNet),
    "painn": (PaiNNConfig, PaiNN),
}


def model_config(name: str, **hparams: object) -> object:
    """The hyper-parameter dataclass of model ``name`` with ``hparams`` overriding defaults."""
    if name not in MODELS:
        raise PilipError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}")
    config_cls, _ = MODELS[name]
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


def build_model(name: str, **hparams: object) -> nn.Module:
    """A freshly initialised model ``name`` ("schnet" | "painn"); see its config dataclass."""
    config = model_config(name, **hparams)
    return MODELS[name][1](config)


__all__ = [
    "MODELS",
    "PaiNN",
    "PaiNNConfig",
    "SchNet",
    "SchNetConfig",
    "build_model",
    "model_config",
]
