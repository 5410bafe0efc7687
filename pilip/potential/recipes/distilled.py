"""A distilled student: a plain model trained on a teacher's energies and forces of a pool
(``pilip distill``, pilip.potential.distill). Its network is the potential (no baseline at run
time); the record keeps the teacher (file, sha256, recipe), the pool and, when the student
also fits the reference energies of the teacher's training set (``--reference-weight``), that
dataset and its weight.

The student's own settings (:class:`StudentSettings`) are declared here once: ``pilip
distill``'s options and the keys of a workflow variant that is a student (``teacher:``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pilip.potential.recipes.base import Recipe, RunPlan
from pilip.potential.train_config import setting

if TYPE_CHECKING:
    from pilip.potential.data import Structures


@dataclass
class StudentSettings:
    teacher: str | None = setting(
        None,
        "workflow: the training variant whose model teaches this one (a Delta variant); the "
        "student is trained by `pilip distill` on the cheap level's extra pool and the "
        "teacher's MD frames",
        cli=False,
        pattern=r"^[A-Za-z][A-Za-z0-9_-]*$",
    )
    reference_weight: float = setting(
        0.0,
        "the student also fits the reference energies of the teacher's training set (its "
        "train split; energies only), each weighted W relative to a pool energy in the energy "
        "loss; 0: the pool alone",
        minimum=0,
        metavar="W",
    )
    reference_dataset: str | None = setting(
        None,
        "the teacher's training set for --reference-weight (a dataset table; default: the "
        "dataset recorded in the teacher's checkpoint)",
        config=False,
        metavar="DATASET",
    )


class Distilled(Recipe):
    """Chosen by ``pilip distill`` (no ``pilip train`` option selects it). ``options``: the
    record (``teacher``, ``pool`` and, with reference energies, ``reference``);
    ``reference``: those energies' structures (train split, float64), fitted at
    ``record["reference"]["weight"]``; ``trained_on``: the reference names of the teacher's
    training energies (the student's energies stand for them)."""

    name: ClassVar[str] = "distilled"

    def __init__(
        self,
        options: dict[str, Any],
        reference: Structures | None = None,
        trained_on: list[str] | None = None,
    ) -> None:
        super().__init__(options)
        self.reference, self.trained_on = reference, trained_on

    def prepare(self, plan: RunPlan) -> None:
        if self.reference is not None:
            reference = self.options["reference"]
            train = with_reference(plan.data["train"], self.reference, reference["weight"])
            plan.data = {**plan.data, "train": train}
            plan.log(
                f"+ {len(self.reference)} reference energies of the teacher's training set "
                f"({reference['dataset']}) at weight {reference['weight']:g}"
            )
        if self.trained_on:
            plan.meta["reference"] = list(self.trained_on)
        plan.records.append({"name": self.name, **self.options})

    @classmethod
    def describe(cls, record: dict[str, Any]) -> str:
        teacher = record["teacher"]
        text = f"distilled from {teacher['path']} ({teacher['recipe']})"
        reference = record.get("reference")
        if reference:
            text += f" + reference energies x{reference['weight']:g}"
        return text


def with_reference(pool: Structures, reference: Structures, weight: float) -> Structures:
    """The pool's training structures followed by the reference structures, whose energies
    weigh ``weight`` (a pool energy weighs 1) and whose forces are not trained on (zeros with
    force weight 0: energies only)."""
    from dataclasses import replace

    import torch

    from pilip.potential.data import concat_structures

    n = len(reference)
    dtype = reference.positions.dtype
    reference = replace(
        reference,
        forces=None if pool.forces is None else torch.zeros_like(reference.positions),
        energy_weight=torch.full((n,), float(weight), dtype=dtype),
        force_weight=torch.zeros(n, dtype=dtype),
    )
    return concat_structures([pool, reference])
