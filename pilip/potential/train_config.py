"""Every training setting, declared once: the fields of :class:`TrainConfig`.

Each field carries its default, its help text and its bounds (:func:`setting`). Everything
else follows from them: ``pilip train``'s options and their ``--help`` defaults
(:func:`add_train_options`), the config schema's ``training`` keys and the keys a variant may
override (:func:`schema_properties`, merged into the schema by ``pilip.config.load_schema``).
A recipe's own settings (``--baseline``, ``--init``, ...) are declared the same way, in its
module (``pilip.potential.recipes``).

A config file's ``training`` section, a ``--variant`` and command-line options are merged by
:func:`training_values` (defaults < ``training`` < variant < options), the one loader every
command that trains uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pilip.errors import PilipError
from pilip.potential.models import MODELS
from pilip.potential.terms import ALIASES, ENERGY, TERM_NAMES, WEAK_MODES, WEAK_TERMS

if typing.TYPE_CHECKING:
    from pilip.potential.losses import LossTerm, WeakLossOptions

STATIC_SHAPES = ("auto", "always", "never")  # not on/off: YAML reads those as booleans
DTYPES = ("float32", "float64")
# Keys that may differ between an interrupted run and its resumption (budget and placement).
RESUMABLE_CHANGES = (
    "epochs", "minutes", "cpu_minutes", "device", "checkpoint_interval_s", "static_shapes",
)  # fmt: skip


def setting(
    default: Any,
    help: str,  # noqa: A002 - argparse's word
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    exclusive_minimum: float | None = None,
    maximum: float | None = None,
    exclusive_maximum: float | None = None,
    items: tuple[str, ...] | None = None,
    cli: bool = True,
    config: bool = True,
    metavar: str | None = None,
    nargs: str | None = None,
    pattern: str | None = None,
) -> Any:
    """A dataclass field with the metadata the CLI and the schema are derived from.

    ``items``: the allowed entries of a list setting (``losses``); ``cli`` False: config only
    (e.g. ``model_params``, whose entries have options of their own); ``config`` False: a
    command-line option only (e.g. ``--baseline-labels``, files a workflow rule passes);
    ``nargs``: a list option given as several words (``"+"``) rather than ``A,B``;
    ``pattern``: a regular expression a string must match (schema only).
    """
    bounds = {
        "minimum": minimum,
        "exclusiveMinimum": exclusive_minimum,
        "maximum": maximum,
        "exclusiveMaximum": exclusive_maximum,
    }
    metadata = {
        "help": help,
        "choices": choices,
        "bounds": {k: v for k, v in bounds.items() if v is not None},
        "items": items,
        "cli": cli,
        "config": config,
        "metavar": metavar,
        "nargs": nargs,
        "pattern": pattern,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON-serialisable; stored in checkpoints)."""

    model: str = setting("painn", "architecture", choices=tuple(MODELS))
    model_params: dict[str, Any] = setting(
        {},
        "model hyper-parameters (pilip/potential/models/<model>.py); unset ones take the "
        "model's defaults, and the run records them all (config.json, checkpoints); a variant "
        "that sets another model inherits none of training's",
        cli=False,
    )
    losses: list[str] = setting(
        [ENERGY], "loss terms, comma-separated on the command line", items=TERM_NAMES
    )
    w_energy: float = setting(1.0, "weight of the energy MSE (eV^2)", minimum=0)
    w_forces: float = setting(1.0, "weight of the force MSE ((eV/A)^2)", minimum=0)
    w_pitc: float = setting(1.0, "weight of PITC (Taylor-expansion consistency)", minimum=0)
    w_pisc: float = setting(0.01, "weight of PISC (conservative-force consistency)", minimum=0)
    per_atom: bool = setting(False, "divide energy and weak-loss residuals by the atom count")
    eps: float = setting(
        0.01, "half-width of the weak-loss perturbations, Angstrom", exclusive_minimum=0
    )
    k: float = setting(
        0.5, "second-order factor of the weak losses: 0 first order, 0.5 trapezoid",
        minimum=0, maximum=1,
    )  # fmt: skip
    center: bool = setting(True, "remove each perturbation's mean over the structure")
    weak_mode: str = setting(
        "auto",
        "weak losses as one fused model call or the paper's three calls (same losses and "
        "gradients); auto: fused on CUDA, three_calls on a CPU",
        choices=WEAK_MODES,
    )
    n_train: int | None = setting(
        None, "train on this many structures of the train split (null: all)", minimum=1
    )
    seed: int = setting(0, "initialisation, batch order and perturbations")
    ensemble: int = setting(
        1,
        "committee size: train this many models differing only in seed (member k: seed + k) "
        "into one model.pt whose mean is the potential and whose spread the ASE calculator "
        "reports (energy_std, forces_std); costs that many times one model: the budget "
        "(epochs, minutes, cpu_minutes) is per member",
        minimum=1,
    )
    epochs: int | None = setting(
        1000,
        "budget in epochs (null: none); the first budget reached stops; per member of a "
        "committee (--ensemble)",
        minimum=1,
    )
    minutes: float | None = setting(
        None, "budget in wall-clock minutes (null: none)", exclusive_minimum=0
    )
    cpu_minutes: float | None = setting(
        None,
        "budget in CPU minutes of the training process (null: none); one that other users "
        "of the machine cannot shorten",
        exclusive_minimum=0,
    )
    batch_size: int = setting(16, "labelled structures per step", minimum=1)
    unlabelled_batch_size: int = setting(
        16, "unlabelled structures added to every step (with unlabelled)", minimum=1
    )
    val_batch_size: int = setting(256, "structures per validation batch", minimum=1)
    lr: float = setting(5e-4, "AdamW learning rate", exclusive_minimum=0)
    weight_decay: float = setting(0.0, "AdamW weight decay", minimum=0)
    ema_decay: float = setting(
        0.99, "exponential moving average of the weights (the saved model)",
        minimum=0, exclusive_maximum=1,
    )  # fmt: skip
    clip_grad_norm: float = setting(10.0, "gradient-norm clipping", exclusive_minimum=0)
    lr_factor: float = setting(
        0.5, "reduce-on-plateau factor", exclusive_minimum=0, exclusive_maximum=1
    )
    lr_patience: int = setting(
        25,
        "epochs without a better validation score (energy RMSE; the loss of energies and "
        "forces where both are trained and validated) before the lr drops",
        minimum=0,
    )
    min_lr: float = setting(1e-6, "lower bound of the learning rate", minimum=0)
    patience: int = setting(
        100, "early stopping: epochs without a better validation score", minimum=1
    )
    dtype: str = setting("float32", "model and data precision", choices=DTYPES)
    device: str = setting("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    checkpoint_interval_s: float = setting(
        30.0, "seconds between writes of last.pt (the resume point; also at the end)", minimum=0
    )
    static_shapes: str = setting(
        "auto",
        "always: pad every batch to one shape, captured once as a CUDA graph and replayed on "
        "a GPU (a CPU runs the padded step eagerly); never; auto: eager until the graph step "
        "has passed its CUDA tests on a GPU (pilip.potential.static_step.GRAPHS_VERIFIED)",
        choices=STATIC_SHAPES,
    )

    def __post_init__(self) -> None:
        self.losses = loss_names(self.losses)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "training config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PilipError(
                f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def terms(self) -> list[LossTerm]:
        """The loss terms of ``losses`` with their ``w_*`` weights."""
        from pilip.potential.losses import make_terms

        weights = {name: getattr(self, f"w_{name}") for name in TERM_NAMES}
        return make_terms(self.losses, weights, self.per_atom)

    def weak_options(self) -> WeakLossOptions:
        from pilip.potential.losses import WeakLossOptions

        return WeakLossOptions(eps=self.eps, k=self.k, center=self.center, mode=self.weak_mode)

    @property
    def weak(self) -> bool:
        return any(name in WEAK_TERMS for name in self.losses)

    def validate(self) -> None:
        """One-line PilipError for any setting out of its declared range, or inconsistent."""
        from pilip.potential.losses import check_terms

        check_terms(self.terms(), self.weak_options())
        if ENERGY not in self.losses:
            raise PilipError("--losses must include energy: it is the only labelled signal")
        for spec in dataclasses.fields(self):
            check_setting(spec, getattr(self, spec.name))
        if self.epochs is None and self.minutes is None and self.cpu_minutes is None:
            raise PilipError("no budget: give --epochs, --minutes and/or --cpu-minutes")


def loss_names(losses: str | list[str]) -> list[str]:
    """``--losses`` as written (``"energy,pitc"`` or a list) -> lower-case term names, aliases
    resolved (``force`` -> ``forces``)."""
    if isinstance(losses, str):
        losses = [s.strip() for s in losses.split(",") if s.strip()]
    return [ALIASES.get(str(n).lower(), str(n).lower()) for n in losses]


# --- what is derived from the declarations ---------------------------------------------------

_SIGNS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def option_name(name: str) -> str:
    """``w_pitc`` -> ``--w-pitc``."""
    return "--" + name.replace("_", "-")


def check_setting(spec: dataclasses.Field, value: Any) -> None:
    """One-line PilipError when ``value`` breaks the choices or bounds declared for ``spec``."""
    meta = spec.metadata
    if value is None:
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise PilipError(
            f"{option_name(spec.name)} {value!r}: use {', '.join(map(str, meta['choices']))}"
        )
    for bound, limit in (meta.get("bounds") or {}).items():
        ok = {
            "minimum": value >= limit,
            "exclusiveMinimum": value > limit,
            "maximum": value <= limit,
            "exclusiveMaximum": value < limit,
        }[bound]
        if not ok:
            raise PilipError(f"{option_name(spec.name)} {value}: must be {_SIGNS[bound]} {limit}")


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(the type behind an annotation, whether None is allowed): ``int | None`` -> (int, True)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _base_type(inner[0])[0], True
    origin = typing.get_origin(annotation)
    return (origin or annotation), False


def declared(cls: type) -> list[tuple[dataclasses.Field, type, bool]]:
    """(field, base type, nullable) of every field of a dataclass declared with setting()."""
    hints = typing.get_type_hints(cls)
    return [(spec, *_base_type(hints[spec.name])) for spec in dataclasses.fields(cls)]


def default_of(spec: dataclasses.Field) -> Any:
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def schema_property(
    spec: dataclasses.Field, base: type, nullable: bool, *, with_default: bool = True
) -> dict[str, Any]:
    """The JSON-schema property of one declared setting (description, type, bounds, default)."""
    meta = spec.metadata
    prop: dict[str, Any] = {"description": meta.get("help", "")}
    if meta.get("choices"):
        prop["enum"] = list(meta["choices"]) + ([None] if nullable else [])
    elif base is list:
        prop["type"] = "array"
        if meta.get("items"):
            prop["items"] = {"enum": list(meta["items"])}
        prop["minItems"] = 1
    elif base is dict:
        prop["type"] = "object"
    else:
        json_type = _JSON_TYPES[base]
        prop["type"] = [json_type, "null"] if nullable else json_type
    prop.update(meta.get("bounds") or {})
    if meta.get("pattern"):
        prop["pattern"] = meta["pattern"]
    if with_default:
        prop["default"] = default_of(spec)
    return prop


def schema_properties(cls: type = TrainConfig, *, with_default: bool = True) -> dict[str, Any]:
    """name -> JSON-schema property of every setting of ``cls`` (``training`` keys; without
    defaults: the keys a variant may override, which inherit from ``training``)."""
    return {
        spec.name: schema_property(spec, base, nullable, with_default=with_default)
        for spec, base, nullable in declared(cls)
        if spec.metadata.get("config", True)
    }


def add_train_options(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """One option per CLI setting of ``cls``; every default is None (absent: the config's or
    the declared value, shown in --help)."""
    for spec, base, _ in declared(cls):
        meta = spec.metadata
        if not meta.get("cli", True):
            continue
        default = default_of(spec)
        shown = ",".join(default) if isinstance(default, list) else default
        help_text = f"{meta.get('help', '')} (default: {'none' if shown is None else shown})"
        kwargs: dict[str, Any] = {"dest": spec.name, "default": None, "help": help_text}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        elif base is list and meta.get("nargs"):
            kwargs["nargs"] = meta["nargs"]
        elif base is list:
            kwargs["metavar"] = "A,B"
        else:
            kwargs["type"] = base
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(option_name(spec.name), **kwargs)


def option_values(args: argparse.Namespace, cls: type = TrainConfig) -> dict[str, Any]:
    """The CLI settings of ``cls`` that the user gave (not None)."""
    values = {}
    for spec in dataclasses.fields(cls):
        value = getattr(args, spec.name, None)
        if spec.metadata.get("cli", True) and value is not None:
            values[spec.name] = value
    return values


# --- the one loader of training settings -----------------------------------------------------

PLACEMENT_KEYS = ("threads", "mem_mb", "runtime", "gpus")  # where a job runs, not what it computes


def training_values(
    study: Mapping[str, Any] | None,
    variant: str | None,
    options: Mapping[str, Any],
    source: str = "--config",
) -> tuple[dict[str, Any], str | None]:
    """(settings by name, unlabelled table) of a run: the declared defaults < the config's
    ``training`` section < its variant ``variant`` < ``options`` (given on the command line).

    The settings hold TrainConfig's keys and the recipes' (``baseline``, ``init``, ...); the
    config's ``training.unlabelled`` feeds only runs with the weak losses, a variant's or an
    option's any run. ``model_params`` merge key by key while ``model`` stays the same; a
    variant or an option that changes ``model`` starts from that model's defaults (see
    :func:`_override`). One-line PilipError for an unknown variant.
    """
    values: dict[str, Any] = {}
    unlabelled, shared_unlabelled = None, False
    if study is not None:
        training = dict(study.get("training", {}))
        variants = training.pop("variants", {})
        unlabelled = training.pop("unlabelled", None)
        shared_unlabelled = True
        for key in PLACEMENT_KEYS:
            training.pop(key, None)
        values.update(training)
        if variant:
            if variant not in variants:
                known = ", ".join(sorted(variants)) or "none"
                raise PilipError(f"{source}: training.variants has no {variant!r} (known: {known})")
            overrides = dict(variants[variant])
            if "unlabelled" in overrides:
                unlabelled, shared_unlabelled = overrides.pop("unlabelled"), False
            _override(values, overrides)
    elif variant:
        raise PilipError("--variant needs --config (the variants live in training.variants)")
    options = dict(options)
    if options.get("unlabelled") is not None:
        unlabelled, shared_unlabelled = options.pop("unlabelled"), False
    options.pop("unlabelled", None)
    _override(values, options)
    weak = set(WEAK_TERMS) & set(loss_names(values.get("losses", default_of(_field("losses")))))
    if shared_unlabelled and not weak:
        unlabelled = None
    return values, unlabelled


def _override(values: dict[str, Any], overrides: dict[str, Any]) -> None:
    """``values`` updated with ``overrides`` in place; ``model_params`` merged key by key, but
    only within one architecture: hyper-parameters belong to the model they were written for,
    so overrides that change ``model`` bring that model's defaults and their own
    ``model_params`` alone (a MACE variant of a PaiNN study takes none of PaiNN's)."""
    overrides = dict(overrides)
    own = overrides.pop("model_params", None) or {}
    model = values.get("model", default_of(_field("model")))
    if overrides.get("model", model) != model:
        model_params = dict(own)
    else:
        model_params = {**(values.get("model_params") or {}), **own}
    values.update(overrides)
    values["model_params"] = model_params


def split_values(values: Mapping[str, Any], source: str) -> tuple[TrainConfig, dict[str, Any]]:
    """(TrainConfig, the recipes' option values) of merged settings."""
    from pilip.potential.recipes import recipe_options

    recipe = recipe_options(dict(values))
    config = TrainConfig.from_dict(
        {k: v for k, v in values.items() if k not in recipe}, source=source
    )
    return config, recipe


def _field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(TrainConfig) if f.name == name)


def complete_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Fill the config schema's ``training`` section from the declarations: TrainConfig's
    settings with their defaults, and the keys a variant may override (TrainConfig's, the
    recipes' and a distilled student's, without defaults: a variant inherits from
    ``training``). Also types the ``cheap_level.pretrain`` overrides. Returns ``schema``
    (changed in place)."""
    from pilip.potential.recipes import recipe_settings, student_settings

    training = schema["properties"]["training"]
    declared_keys = schema_properties()
    training["properties"] = {**declared_keys, **training.get("properties", {})}
    variant = training["properties"]["variants"]["additionalProperties"]
    overridable = schema_properties(with_default=False)
    for settings in (*recipe_settings(), student_settings()):
        overridable.update(schema_properties(settings, with_default=False))
    overridable.update({k: v for k, v in variant.get("properties", {}).items()})
    variant["properties"] = overridable
    variant["propertyNames"] = {"enum": sorted(overridable)}
    pretrain = schema["properties"].get("cheap_level", {}).get("properties", {}).get("pretrain")
    if pretrain is not None:
        names = pretrain["propertyNames"]["enum"]
        pretrain["properties"] = {name: dict(declared_keys[name]) for name in names}
        for prop in pretrain["properties"].values():
            prop.pop("default", None)
    return schema
