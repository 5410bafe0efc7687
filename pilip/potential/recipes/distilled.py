"""A distilled student: a plain model trained on a teacher's energies and forces of a pool
(``pilip distill``, pilip.potential.distill). Its network is the potential (no baseline at run
time); the record keeps the teacher (file, sha256, recipe) and the pool."""

from __future__ import annotations

from typing import Any, ClassVar

from pilip.potential.recipes.base import Recipe, RunPlan


class Distilled(Recipe):
    """Chosen by ``pilip distill`` (no ``pilip train`` option selects it)."""

    name: ClassVar[str] = "distilled"

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)  # {"teacher": {...}, "pool": [...]}

    def prepare(self, plan: RunPlan) -> None:
        plan.records.append({"name": self.name, **self.options})

    @classmethod
    def describe(cls, record: dict[str, Any]) -> str:
        teacher = record["teacher"]
        return f"distilled from {teacher['path']} ({teacher['recipe']})"
