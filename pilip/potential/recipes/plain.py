"""Plain training: the network is the potential, trained on the reference labels as they are."""

from __future__ import annotations

from typing import ClassVar

from pilip.potential.recipes.base import Recipe, RunPlan


class Plain(Recipe):
    """The recipe of a run that selects no other."""

    name: ClassVar[str] = "plain"

    def prepare(self, plan: RunPlan) -> None:
        plan.records.append({"name": self.name})
