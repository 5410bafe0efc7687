"""A pilip reference-method plugin for the SLURM test: ASE's EMT energies, slowly.

Each geometry sleeps `options.delay_s` seconds before its EMT single point, standing in for
an expensive quantum-chemistry calculation without using a CPU, so a chunk can be made to
outlast a SLURM time limit on any machine. Registered through the `pilip.reference.backends` entry
point by the test (a dist-info next to this module), as an outside package would.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from pilip.backends.base import Backend, compute_pending
from pilip.errors import PilipError


class SleepyEMTBackend(Backend):
    name: ClassVar[str] = "sleepy_emt"

    def __init__(self, reference: str, spec: dict[str, Any]) -> None:
        super().__init__(reference, spec)
        self.options = dict(spec.get("options") or {})
        unknown = set(self.options) - {"delay_s"}
        if unknown:
            raise PilipError(f"{self.key('options')}: unknown option(s) {sorted(unknown)}")
        self.delay_s = float(self.options.get("delay_s", 0.0))

    def provenance(self) -> dict[str, Any]:
        import ase

        return {
            "program": "ase-emt",
            "program_version": ase.__version__,
            "method": "EMT",
            "options": dict(self.options),
        }

    def run(self, configs, results: Path, *, threads, gradients, scratch, retry_options,
            timeout_s) -> None:  # fmt: skip
        def single_point(config, options):
            from ase import Atoms
            from ase.calculators.emt import EMT

            time.sleep(self.delay_s)
            atoms = Atoms(numbers=config["numbers"], positions=config["positions"])
            atoms.calc = EMT()
            forces = atoms.get_forces().tolist() if gradients else None
            return atoms.get_potential_energy(), forces, {}

        compute_pending(configs, results, single_point, options=self.options,
                        retry_options=None, threads=threads, provenance=self.provenance(),
                        timeout_s=timeout_s)  # fmt: skip
