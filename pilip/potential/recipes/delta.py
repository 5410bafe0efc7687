"""Delta-learning: the network learns reference minus a cheap baseline; the potential is
baseline + network (``pilip train DATASET --baseline gfn2-xtb``).

Every training, validation and unlabelled structure gets the baseline's energy and forces,
read from labels tables (``--baseline-labels``, e.g. from ``pilip label DATA --reference
gfn2-xtb --forces -o T``) or, where none are given, labelled by the same code and into the same
results format as ``pilip label`` (``baseline.parquet`` and ``baseline.results.jsonl`` in the
run folder, resumable). Structures where the baseline failed are left out (their rows and
errors stay in the labels table). With the weak losses the losses act on the total surface
(:class:`DeltaSurface`: the baseline at the perturbed geometries too).

The checkpoint records the baseline's full specification (program, version, method, options,
charge, multiplicity); ``load_model`` returns baseline + network (``pilip.potential.baselines.
DeltaModel``), so evaluate, md and the calculator need no flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pilip.errors import PilipError
from pilip.potential.recipes.base import Recipe, RunPlan
from pilip.potential.train_config import setting

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from pilip.potential.baselines import Baseline, BaselineLabels, DeltaModel
    from pilip.potential.data import Structures

LABELS_FILE = "baseline.parquet"  # the baseline's labels of the dataset's structures
UNLABELLED_LABELS_FILE = "baseline.unlabelled.parquet"  # ... and of --unlabelled


@dataclass
class DeltaSettings:
    baseline: str | None = setting(
        None,
        "Delta-learning: learn reference minus this cheap level (gfn2-xtb, gfn1-xtb, "
        "ipea1-xtb or a --config reference that runs in process: evaluate, md and the "
        "calculator add it back; or, with --baseline-labels, a level that cannot, such as "
        "b3lyp/def2-svp: a teacher to distil)",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        metavar="NAME",
    )
    baseline_labels: list[str] | None = setting(
        None,
        "labels tables of --baseline for the structures (read, not computed)",
        config=False,
        nargs="+",
        metavar="TABLE",
    )


class Delta(Recipe):
    name: ClassVar[str] = "delta"
    settings: ClassVar[type] = DeltaSettings
    wraps_inference: ClassVar[bool] = True

    def check(self, plan: RunPlan) -> None:
        from pilip.potential.baselines import resolve_baseline

        if not self.options.get("baseline"):
            raise PilipError("--baseline-labels needs --baseline NAME (the method they come from)")
        tabled = bool(self.options.get("baseline_labels"))
        self.baseline = resolve_baseline(
            self.options["baseline"], plan.study, plan.config_path, tabled=tabled
        )
        if not self.baseline.in_process and plan.config.weak:
            raise PilipError(
                f"--baseline {self.baseline.name} runs only from labels tables, but PITC and "
                "PISC need it at perturbed geometries: drop pitc and pisc from --losses"
            )
        plan.records.append({"name": self.name, "baseline": self.baseline.specification()})

    def prepare(self, plan: RunPlan) -> None:
        setup, plan.data, plan.unlabelled = baseline_targets(
            self.baseline, plan.data, dataset=plan.dataset, run_dir=plan.out_dir,
            unlabelled=plan.unlabelled, unlabelled_path=plan.unlabelled_path,
            config_path=plan.config_path, labels_paths=self.options.get("baseline_labels"),
            log=plan.log,
        )  # fmt: skip
        plan.record_of(self.name).update(setup.record())
        if not self.baseline.in_process:
            plan.record_of(self.name)["tabled"] = True
            plan.log(
                f"the baseline {self.baseline.name} runs only from labels tables: evaluate the "
                "model with --baseline-labels; distill it for MD and the calculator"
            )
        if plan.config.weak:  # PITC and PISC act on baseline + network
            plan.surface = DeltaSurface(setup)

    @classmethod
    def inference_model(
        cls,
        model: nn.Module,
        record: dict[str, Any],
        source: str,
        baseline_labels: list[str] | None = None,
        structures: str | Path | None = None,
        **inputs: Any,
    ) -> DeltaModel:
        """baseline + network. A baseline that runs in process is computed for any structure
        (from ``baseline_labels`` where they hold it); a tabled one only from
        ``baseline_labels`` for the structures of the table ``structures``."""
        from pilip.potential.baselines import (
            DeltaModel,
            TabledValues,
            baseline_from_specification,
            describe,
            tabled_cache,
        )

        specification = record["baseline"]
        electrons = (specification.get("charge", 0), specification.get("multiplicity", 1))
        cache = None
        if baseline_labels:
            if structures is None:
                raise PilipError(f"{source}: baseline labels need the table of the structures")
            dtype = next(model.parameters()).dtype
            cache = tabled_cache(baseline_labels, structures, specification, dtype)
        if record.get("tabled"):
            if cache is None:
                raise PilipError(
                    f"{source} is a Delta model over {describe(specification)}, which runs only "
                    "from labels tables: evaluate it with `pilip evaluate MODEL DATASET "
                    "--baseline-labels T`; for MD and the ASE calculator distill it into a "
                    "standalone model"
                )
            name = ", ".join(str(p) for p in baseline_labels)
            return DeltaModel(model, TabledValues(specification["name"], name), cache, *electrons)
        baseline = baseline_from_specification(specification, source)
        return DeltaModel(model, baseline, cache, *electrons)

    @classmethod
    def describe(cls, record: dict[str, Any]) -> str:
        from pilip.potential.baselines import describe

        if record.get("alone"):
            return f"{describe(record['baseline'])} alone"
        return f"Delta over {describe(record['baseline'])}"

    @classmethod
    def init_problem(
        cls, init: dict[str, Any] | None, run: dict[str, Any] | None, path: str
    ) -> str:
        from pilip.potential.baselines import describe, method_key

        if init is None and run is None:
            return ""
        if run is None:
            return (
                f"--init {path} is a Delta model over {describe(init['baseline'])}; add "
                f"--baseline {init['baseline']['name']} to fine-tune it, or start from a model "
                "without a baseline"
            )
        want = run["baseline"]
        if init is None:
            return (
                f"--init {path} has no baseline but --baseline {want['name']} was given: its "
                "network predicts total energies, not corrections; drop --baseline or --init"
            )
        have = init["baseline"]
        if method_key(have) != method_key(want):
            return (
                f"--init {path} is a Delta model over {describe(have)}, but --baseline is "
                f"{describe(want)}; use the same baseline"
            )
        return ""


@dataclasses.dataclass
class DeltaSetup:
    """The baseline of a run and its labels for every structure that training reads."""

    baseline: Baseline
    configs: dict[str, list[dict[str, Any]]]  # split (or "unlabelled") -> config dicts, kept rows
    labels: dict[str, BaselineLabels]  # split -> baseline labels of the kept rows
    dropped: dict[str, list[str]]  # split -> config ids where the baseline failed

    def electrons(self) -> tuple[int, int]:
        """(charge, multiplicity) shared by every structure (checked by baseline_targets)."""
        config = next(c for configs in self.configs.values() for c in configs)
        return int(config["charge"]), int(config["multiplicity"])

    def record(self) -> dict[str, Any]:
        """The checkpoint record: the baseline's full specification (with the charge and
        multiplicity it runs at) and what was left out."""
        charge, multiplicity = self.electrons()
        return {
            "baseline": {
                **self.baseline.specification(),
                "charge": charge,
                "multiplicity": multiplicity,
            },
            "failed": {k: v for k, v in self.dropped.items() if v},
        }

    def labels_by_content(self) -> dict[str, tuple[float, np.ndarray]]:
        """Structure key (pilip.potential.baselines.structure_key) -> (energy eV, forces eV/A)."""
        from pilip.potential.baselines import config_key

        values = {}
        for split, labels in self.labels.items():
            for config, energy, forces in zip(
                self.configs[split], labels.energy, labels.forces, strict=True
            ):
                values[config_key(config)] = (energy, forces)
        return values


class DeltaSurface:
    """The loss surface of Delta with the weak losses: baseline + network, on the reference
    labels (the baseline looked up from the run's labels, computed at perturbed geometries)."""

    def __init__(self, setup: DeltaSetup) -> None:
        self.setup = setup

    def wrap(self, model: nn.Module, dtype: torch.dtype) -> DeltaModel:
        from pilip.potential.baselines import BaselineCache, DeltaModel, cache_from_labels

        cache = BaselineCache()
        for split, labels in self.setup.labels.items():
            cache_from_labels(labels, self.setup.configs[split], dtype, cache)
        return DeltaModel(model, self.setup.baseline, cache, *self.setup.electrons())

    def labels(self, s: Structures) -> Structures:
        """``s`` (baseline-subtracted targets) with the baseline added back (found by
        content): the reference labels."""
        import numpy as np

        from pilip.potential.baselines import BaselineLabels, structure_key

        values = self.setup.labels_by_content()
        numbers, positions = s.numbers.numpy(), s.positions.double().numpy()
        energy, forces = [], []
        for i in range(len(s)):
            a, b = int(s.offsets[i]), int(s.offsets[i + 1])
            found = values.get(structure_key(numbers[a:b], positions[a:b]))
            if found is None:
                raise PilipError(f"structure {i} has no baseline label; this is a bug in pilip")
            energy.append(found[0])
            forces.append(found[1])
        return shifted(s, BaselineLabels([""] * len(s), np.asarray(energy), forces, {}), 1.0)


def shifted(s: Structures, labels: BaselineLabels, sign: float = -1.0) -> Structures:
    """``s`` with the baseline's energy (and forces, where ``s`` has them) subtracted (or, with
    ``sign`` +1, added)."""
    import numpy as np
    import torch

    energy = None if s.energy is None else s.energy + sign * torch.from_numpy(labels.energy)
    forces = s.forces
    if forces is not None:
        forces = forces + sign * torch.from_numpy(np.concatenate(labels.forces))
    return replace(s, energy=energy, forces=forces)


def baseline_labels_of(
    baseline: Baseline,
    groups: dict[str, tuple[Path, list[dict[str, Any]]]],
    *,
    run_dir: Path,
    config_path: str | None,
    labels_paths: list[str] | None,
    log: Any,
) -> BaselineLabels:
    """The baseline's labels of every configuration in ``groups`` (name -> (table, configs)):
    read from ``labels_paths``, or labelled as ``pilip label --reference NAME --forces`` would
    (one labels table per source table in ``run_dir``; a rerun computes only what is missing)."""
    import torch

    from pilip.potential.baselines import describe, read_labels_for
    from pilip.reference.labelling import label_table

    unique = list({c["id"]: c for _, configs in groups.values() for c in configs}.values())
    if labels_paths:
        log(f"baseline {describe(baseline.specification())} read from --baseline-labels")
        return read_labels_for(labels_paths, unique, baseline)
    log(f"baseline {describe(baseline.specification())}: {len(unique)} structures")
    wanted: dict[Path, tuple[Path, dict[str, None]]] = {}  # output -> (table, ids)
    for name, (table, configs) in groups.items():
        output = run_dir / (UNLABELLED_LABELS_FILE if name == "unlabelled" else LABELS_FILE)
        wanted.setdefault(output, (table, {}))[1].update(dict.fromkeys(c["id"] for c in configs))
    for output, (table, ids) in wanted.items():
        label_table(table, baseline.name, output, config_path=config_path, gradients=True,
                    threads=int(torch.get_num_threads()), ids=list(ids))  # fmt: skip
    return read_labels_for(list(wanted), unique, baseline)


def baseline_targets(
    baseline: Baseline,
    data: dict[str, Structures],
    *,
    dataset: str | Path,
    run_dir: str | Path,
    unlabelled: Structures | None = None,
    unlabelled_path: str | Path | None = None,
    config_path: str | None = None,
    labels_paths: list[str] | None = None,
    log: Any = lambda message: None,
) -> tuple[DeltaSetup, dict[str, Structures], Structures | None]:
    """(setup, data with baseline-subtracted targets, unlabelled with baseline labels) for a
    Delta run over ``baseline``.

    Failed structures are dropped from every split (logged, kept in the labels table); one-line
    PilipError for structures of several charge states, elements the baseline does not cover,
    labels of another method, or a split with no structure left.
    """
    from pilip.potential.baselines import BaselineLabels, configs_of_table, match_configs

    run_dir = Path(run_dir)
    groups: dict[str, tuple[Structures, Path, list[dict[str, Any]]]] = {}
    table_configs = configs_of_table(dataset)
    for split, s in data.items():
        configs = match_configs(s.numbers, s.positions, s.offsets, table_configs, str(dataset))
        groups[split] = (s, Path(dataset), configs)
    if unlabelled is not None:
        source = str(unlabelled_path or "--unlabelled")
        extra = configs_of_table(unlabelled_path) if unlabelled_path else []
        configs = match_configs(
            unlabelled.numbers, unlabelled.positions, unlabelled.offsets, extra, source
        )
        groups["unlabelled"] = (unlabelled, Path(unlabelled_path or source), configs)
    unique = list({c["id"]: c for _, _, configs in groups.values() for c in configs}.values())
    electrons = sorted({(int(c["charge"]), int(c["multiplicity"])) for c in unique})
    if len(electrons) > 1:  # the model's batches carry no charge: one state for all
        raise PilipError(
            f"--baseline {baseline.name}: the structures have different charges or "
            f"multiplicities {electrons}; train one Delta model per charge state"
        )
    try:
        if baseline.in_process:  # a tabled baseline's labels were checked when computed
            baseline.backend.check(unique)
    except PilipError as exc:
        raise PilipError(f"--baseline {baseline.name}: {exc}") from None
    all_labels = baseline_labels_of(
        baseline, {name: (table, configs) for name, (_, table, configs) in groups.items()},
        run_dir=run_dir, config_path=config_path, labels_paths=labels_paths, log=log,
    )  # fmt: skip
    by_id = {cid: i for i, cid in enumerate(all_labels.config_ids)}

    setup = DeltaSetup(baseline, {}, {}, {})
    out: dict[str, Structures] = {}
    kept_unlabelled = None
    for split, (s, _, configs) in groups.items():
        rows = [by_id[c["id"]] for c in configs]
        ok = all_labels.ok[rows]
        setup.dropped[split] = [c["id"] for c, good in zip(configs, ok, strict=True) if not good]
        if setup.dropped[split]:
            first = setup.dropped[split][0]
            log(
                f"baseline failed on {len(setup.dropped[split])} {split} structure(s), left out "
                f"(e.g. {first}: {all_labels.errors[first]})"
            )
        kept = [rows[i] for i in range(len(configs)) if ok[i]]
        labels = BaselineLabels(
            [all_labels.config_ids[i] for i in kept],
            all_labels.energy[kept],
            [all_labels.forces[i] for i in kept],
            {},
        )
        setup.configs[split] = [c for c, good in zip(configs, ok, strict=True) if good]
        setup.labels[split] = labels
        subset = _subset(s, ok)
        if split == "unlabelled":
            kept_unlabelled = subset
        else:
            out[split] = shifted(subset, labels)
    for split, s in out.items():
        if len(s) == 0:
            raise PilipError(
                f"--baseline {baseline.name} failed on every {split} structure "
                f"(see {run_dir / LABELS_FILE}); use another baseline"
            )
    return setup, out, kept_unlabelled


def _subset(s: Structures, keep: np.ndarray) -> Structures:
    import numpy as np
    import torch

    return s.subset(torch.from_numpy(np.flatnonzero(keep)))
