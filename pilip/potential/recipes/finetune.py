"""Fine-tuning: start from a pilip checkpoint (``pilip train DATASET --init MODEL.pt``).

The typical use: pretrain on cheap energies and forces of many configurations (GFN2-xTB, DFT
gradients), then fine-tune on the few reference energies. The checkpoint gives the
architecture and the weights; the loop (``pilip.potential.train.build_model``) refits the
per-element reference energies by least squares on the new targets (the cheap level's total
energies differ from the reference's by thousands of eV) and keeps the network and its output
scale; the optimizer starts afresh. On the checkpoint's own training data the refit gives back
its shifts, so the fine-tune starts exactly where the checkpoint ended.

The model asked for, by ``--model`` or by a ``--config`` (``training.model`` or the variant's),
must be the checkpoint's: a MACE variant never trains a PaiNN checkpoint under its name. A
checkpoint whose network alone is not the potential (a Delta model) fine-tunes only in a run
of the same kind: every recipe that wraps inference compares its record in the checkpoint with
its record in the run (``Recipe.init_problem``).

A committee checkpoint (``--ensemble``) gives one set of weights per member: member k of the
run starts from its member k mod M (M members), so a committee fine-tunes member by member, a
larger one cycles through them (differing still in batch order and perturbations), and a
single model (``--ensemble 1``) starts from member 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pilip.errors import PilipError
from pilip.potential.recipes.base import Recipe, RunPlan, state_dict_in
from pilip.potential.train_config import setting


@dataclass
class FinetuneSettings:
    init: str | None = setting(
        None,
        "fine-tune: start from this checkpoint (its architecture and weights; per-element "
        "energies refitted, fresh optimizer)",
        pattern=r"^[A-Za-z0-9_./-]+[.]pt$",
        metavar="MODEL.pt",
    )


class Finetune(Recipe):
    name: ClassVar[str] = "finetune"
    settings: ClassVar[type] = FinetuneSettings

    def check(self, plan: RunPlan) -> None:
        from pilip.potential.checkpoint import read_checkpoint
        from pilip.potential.committee import committee_problem
        from pilip.potential.recipes import recipe_class, recipe_records

        path = self.options["init"]
        self.payload = read_checkpoint(path, "cpu")
        if "members" in self.payload["model"]:
            problem = committee_problem(self.payload)
            if problem:
                raise PilipError(f"--init {path}: {problem}")
        # the model asked for: an option's, else a --config's (training.model or the
        # variant's); none: the checkpoint's
        model, asked_by = plan.given.get("model"), "--model"
        if model is None and plan.study is not None:
            model, asked_by = plan.config.model, f"--config {plan.config_path} (model)"
        check_compatible(
            self.payload,
            path,
            model=model,
            model_params=plan.config.model_params,
            elements=plan.elements,
            asked_by=asked_by,
        )
        init = {r["name"]: r for r in recipe_records(self.payload["meta"])}
        run = {r["name"]: r for r in plan.records}
        for name in dict.fromkeys([*init, *run]):
            cls = recipe_class(name)
            if cls.wraps_inference:
                problem = cls.init_problem(init.get(name), run.get(name), str(path))
                if problem:
                    raise PilipError(problem)

    def prepare(self, plan: RunPlan) -> None:
        path = self.options["init"]
        architecture = self.payload["model"]
        hparams = {k: v for k, v in architecture["hparams"].items() if k != "dtype"}
        members = architecture.get("members")
        if members:
            plan.init_weights = [state_dict_in(m["state_dict"], plan.config.dtype) for m in members]
        else:
            plan.init_weights = state_dict_in(architecture["state_dict"], plan.config.dtype)
        plan.config = dataclasses.replace(
            plan.config, model=architecture["name"], model_params=hparams
        )
        plan.records.append({"name": self.name, "init": str(path)})
        source = f"the {len(members)} members of {path}" if members else str(path)
        plan.log(f"fine-tuning from {source} ({architecture['name']})")
        if members and plan.config.ensemble != len(members):
            plan.log(
                f"--init {path} has {len(members)} members and this run {plan.config.ensemble}: "
                f"member k starts from its member k mod {len(members)}"
            )

    @classmethod
    def describe(cls, record: dict[str, Any]) -> str:
        return f"fine-tuned from {record['init']}"


def check_compatible(
    payload: dict[str, Any],
    path: str | Path,
    *,
    model: str | None,
    model_params: dict[str, Any],
    elements: list[int],
    asked_by: str = "--model",
) -> None:
    """One-line PilipError if the ``--init`` checkpoint cannot start this run.

    ``model`` / ``model_params``: the architecture the user asked for (None / absent: take the
    checkpoint's), ``asked_by`` where (``--model``, or a config's model); ``elements``: atomic
    numbers of the new data (training, validation and unlabelled structures), each of which
    the checkpoint must have been trained on.
    """
    from ase.data import chemical_symbols

    name = payload["model"]["name"]
    hparams = payload["model"]["hparams"]
    if model is not None and model != name:
        if asked_by == "--model":
            asked, fix = f"--model {model} was asked", "drop --model"
        else:
            asked, fix = f"{asked_by} asks for {model}", f"set model: {name} there"
        raise PilipError(
            f"--init {path} is a {name} model but {asked}; {fix} (fine-tuning keeps the "
            "checkpoint's architecture)"
        )
    different = sorted(
        key for key, value in model_params.items() if key in hparams and hparams[key] != value
    )
    unknown = sorted(key for key in model_params if key not in hparams)
    if different or unknown:
        detail = ", ".join(
            f"{k} {model_params[k]} (checkpoint: {hparams.get(k)})" for k in different
        )
        detail += ", ".join(f"{k} (not a {name} setting)" for k in unknown)
        raise PilipError(
            f"--init {path} has another architecture than asked: {detail}; drop those flags "
            "(fine-tuning keeps the checkpoint's architecture)"
        )
    trained = {int(z) for z in payload["meta"].get("elements", [])}
    missing = sorted(set(int(z) for z in elements) - trained)
    if missing:
        names = ", ".join(chemical_symbols[z] for z in missing)
        known = ", ".join(chemical_symbols[z] for z in sorted(trained))
        raise PilipError(
            f"--init {path} was trained on {known} only; the new data also have {names}; "
            "pretrain on data with every element"
        )
