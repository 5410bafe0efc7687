"""What ``pilip train`` does for ``--baseline`` (Delta-learning) and ``--init`` (fine-tuning)
before its loop starts: every input check, the baseline's labels, the starting model.

Delta: every training, validation and unlabelled structure gets the baseline's energy and
forces (computed in-process and cached in the run folder, or read from ``--baseline-labels``);
structures where the baseline failed are left out (and listed in ``baseline.parquet`` with the
error); the model then learns reference minus baseline. Fine-tune: the checkpoint's model with
its per-element energies refitted to the new targets (by the loop).

Compatibility of the two: with ``--baseline`` an ``--init`` checkpoint must be a Delta model
over the same method and options (its network is a correction to that baseline); without, it
must not be one (a Delta model's network alone is no potential).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pilip.errors import PilipError
from pilip.potential.baselines import (
    Baseline,
    BaselineCache,
    BaselineLabels,
    DeltaModel,
    cache_from_labels,
    compute_labels,
    config_key,
    configs_of_table,
    describe,
    match_configs,
    read_labels_for,
    resolve_baseline,
    structure_key,
)
from pilip.potential.data import TRAIN, Structures


@dataclasses.dataclass
class DeltaSetup:
    """The baseline of a run and its labels for every structure that training reads."""

    baseline: Baseline
    configs: dict[str, list[dict[str, Any]]]  # split (or "unlabelled") -> config dicts, kept rows
    labels: dict[str, BaselineLabels]  # split -> baseline labels of the kept rows
    dropped: dict[str, list[str]]  # split -> config ids where the baseline failed

    def electrons(self) -> tuple[int, int]:
        """(charge, multiplicity) shared by every structure (checked by prepare_baseline)."""
        config = next(c for configs in self.configs.values() for c in configs)
        return int(config["charge"]), int(config["multiplicity"])

    def meta(self) -> dict[str, Any]:
        """Checkpoint meta: the baseline's full specification (with the charge and
        multiplicity it runs at) and what was left out."""
        charge, multiplicity = self.electrons()
        return {
            "baseline": {
                **self.baseline.specification(),
                "charge": charge,
                "multiplicity": multiplicity,
            },
            "baseline_failed": {k: v for k, v in self.dropped.items() if v},
        }

    def cache(self, dtype: torch.dtype) -> BaselineCache:
        """Baseline values of every kept structure, keyed for batches in ``dtype``."""
        cache = BaselineCache()
        for split, labels in self.labels.items():
            cache_from_labels(labels, self.configs[split], dtype, cache)
        return cache

    def model(self, model: nn.Module, dtype: torch.dtype) -> DeltaModel:
        """The total surface baseline + ``model``, with the cached labels."""
        charge, multiplicity = self.electrons()
        return DeltaModel(model, self.baseline, self.cache(dtype), charge, multiplicity)

    def restore(self, s: Structures) -> Structures:
        """``s`` (baseline-subtracted targets) with the baseline added back: the reference
        labels, for training the total surface (structures found by content)."""
        values = {}
        for split, labels in self.labels.items():
            for config, energy, forces in zip(
                self.configs[split], labels.energy, labels.forces, strict=True
            ):
                values[config_key(config)] = (energy, forces)
        numbers, positions = s.numbers.numpy(), s.positions.double().numpy()
        energy, forces = [], []
        for i in range(len(s)):
            a, b = int(s.offsets[i]), int(s.offsets[i + 1])
            found = values.get(structure_key(numbers[a:b], positions[a:b]))
            if found is None:
                raise PilipError(f"structure {i} has no baseline label; this is a bug in pilip")
            energy.append(found[0])
            forces.append(found[1])
        base = BaselineLabels([""] * len(s), np.asarray(energy), forces, {})
        return _shifted(s, base, sign=1.0)


def _subset(s: Structures, keep: np.ndarray) -> Structures:
    return s.subset(torch.from_numpy(np.flatnonzero(keep)))


def _shifted(s: Structures, labels: BaselineLabels, sign: float = -1.0) -> Structures:
    """``s`` with the baseline's energy (and forces, where ``s`` has them) subtracted (or, with
    ``sign`` +1, added)."""
    energy = None if s.energy is None else s.energy + sign * torch.from_numpy(labels.energy)
    forces = s.forces
    if forces is not None:
        forces = forces + sign * torch.from_numpy(np.concatenate(labels.forces))
    return replace(s, energy=energy, forces=forces)


def prepare_baseline(
    name: str,
    data: dict[str, Structures],
    *,
    dataset: str | Path,
    run_dir: str | Path,
    unlabelled: Structures | None = None,
    unlabelled_path: str | Path | None = None,
    config: dict[str, Any] | None = None,
    config_path: str | Path | None = None,
    labels_path: str | Path | list[str | Path] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[DeltaSetup, dict[str, Structures], Structures | None]:
    """(setup, data with baseline-subtracted targets, unlabelled) for ``--baseline name``.

    Failed structures are dropped from every split (logged, kept in ``baseline.parquet``);
    one-line PilipError for an unknown or out-of-process baseline, elements the baseline does
    not cover, labels of another method, or a training split with no structure left.
    """
    baseline = resolve_baseline(name, config, str(config_path or "--config"))
    groups: dict[str, tuple[Structures, list[dict[str, Any]]]] = {}
    table_configs = configs_of_table(dataset)
    for split, s in data.items():
        groups[split] = (
            s,
            match_configs(s.numbers, s.positions, s.offsets, table_configs, str(dataset)),
        )
    if unlabelled is not None:
        source = str(unlabelled_path or "--unlabelled")
        extra = configs_of_table(unlabelled_path) if unlabelled_path else []
        groups["unlabelled"] = (
            unlabelled,
            match_configs(
                unlabelled.numbers, unlabelled.positions, unlabelled.offsets, extra, source
            ),
        )
    everything = [c for _, configs in groups.values() for c in configs]
    unique = list({c["id"]: c for c in everything}.values())
    electrons = sorted({(int(c["charge"]), int(c["multiplicity"])) for c in unique})
    if len(electrons) > 1:  # the model's batches carry no charge: one state for all
        raise PilipError(
            f"--baseline {baseline.name}: the structures have different charges or "
            f"multiplicities {electrons}; train one Delta model per charge state"
        )
    try:
        baseline.backend.check(unique)
    except PilipError as exc:
        raise PilipError(f"--baseline {baseline.name}: {exc}") from None
    if labels_path is not None:
        all_labels = read_labels_for(labels_path, unique, baseline)
        log(f"baseline {describe(baseline.specification())} read from --baseline-labels")
    else:
        log(f"baseline {describe(baseline.specification())}: {len(unique)} structures")
        all_labels = compute_labels(baseline, unique, run_dir)
    by_id = {cid: i for i, cid in enumerate(all_labels.config_ids)}

    setup = DeltaSetup(baseline, {}, {}, {})
    out: dict[str, Structures] = {}
    kept_unlabelled = None
    for split, (s, configs) in groups.items():
        rows = [by_id[c["id"]] for c in configs]
        labels = BaselineLabels(
            [c["id"] for c in configs],
            all_labels.energy[rows],
            [all_labels.forces[i] for i in rows],
            {c["id"]: all_labels.errors[c["id"]] for c in configs if c["id"] in all_labels.errors},
        )
        keep = labels.ok
        setup.dropped[split] = [c["id"] for c, ok in zip(configs, keep, strict=True) if not ok]
        if setup.dropped[split]:
            first = setup.dropped[split][0]
            log(
                f"baseline failed on {len(setup.dropped[split])} {split} structure(s), left out "
                f"(e.g. {first}: {labels.errors[first]})"
            )
        kept = [i for i in range(len(configs)) if keep[i]]
        labels = BaselineLabels(
            [labels.config_ids[i] for i in kept],
            labels.energy[kept],
            [labels.forces[i] for i in kept],
            {},
        )
        setup.configs[split] = [configs[i] for i in kept]
        setup.labels[split] = labels
        subset = _subset(s, keep)
        if split == "unlabelled":
            kept_unlabelled = subset
        else:
            out[split] = _shifted(subset, labels)
    if len(out.get(TRAIN, [])) == 0:
        raise PilipError(
            f"--baseline {baseline.name} failed on every training structure "
            f"(see {Path(run_dir) / 'baseline.parquet'}); use another baseline"
        )
    for split, s in out.items():
        if len(s) == 0:
            raise PilipError(
                f"--baseline {baseline.name} failed on every {split} structure "
                f"(see {Path(run_dir) / 'baseline.parquet'}); use another baseline"
            )
    return setup, out, kept_unlabelled


def check_init_baseline(
    payload: dict[str, Any], path: str | Path, baseline: Baseline | None
) -> None:
    """One-line PilipError if the ``--init`` checkpoint does not fit ``--baseline`` (None:
    no baseline)."""
    init = payload["meta"].get("baseline")
    if baseline is None:
        if init:
            raise PilipError(
                f"--init {path} is a Delta model over {describe(init)}; add --baseline "
                f"{init['name']} to fine-tune it, or start from a model without a baseline"
            )
        return
    want = baseline.specification()
    if not init:
        raise PilipError(
            f"--init {path} has no baseline but --baseline {want['name']} was given: its "
            "network predicts total energies, not corrections; drop --baseline or --init"
        )
    if (init["program"], init["method"], init.get("options") or {}) != (
        want["program"],
        want["method"],
        want.get("options") or {},
    ):
        raise PilipError(
            f"--init {path} is a Delta model over {describe(init)}, but --baseline is "
            f"{describe(want)}; use the same baseline"
        )


def init_model(
    path: str | Path,
    *,
    model: str | None,
    model_params: dict[str, Any],
    elements: list[int],
    dtype: str,
    setup: DeltaSetup | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(initial weights in ``dtype``, architecture {"model", "model_params"}) for ``--init
    path``, after every check (architecture flags, elements, baseline) has passed. The loop
    (``pilip.potential.train``) refits the per-element energies to the run's targets."""
    from pilip.potential.finetune import check_compatible, init_checkpoint, init_weights

    payload = init_checkpoint(path)
    check_compatible(payload, path, model=model, model_params=model_params, elements=elements)
    check_init_baseline(payload, path, None if setup is None else setup.baseline)
    hparams = {k: v for k, v in payload["model"]["hparams"].items() if k != "dtype"}
    return init_weights(payload, dtype), {
        "model": payload["model"]["name"],
        "model_params": hparams,
    }
