"""GFN2-xTB (and GFN1/IPEA1) through tblite: a cheap reference for tests and pre-training.

Runs in the main interpreter, milliseconds per small molecule. Energies in eV and forces in
eV/A come straight from ``tblite.ase.TBLite``; there are no basis-set components to store.
The per-geometry ``timeout_s`` is not enforced: tblite's self-consistent cycle cannot be
interrupted from Python, and its iteration limit (``max_iterations``) bounds it instead.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from pilip.backends.base import (
    Backend,
    append_result,
    open_results_for_append,
    pending_configs,
    result_record,
)
from pilip.errors import PilipError

METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB", "ipea1-xtb": "IPEA1-xTB"}
# tblite.ase.TBLite keywords a user may set; charge and multiplicity come from each config
OPTIONS = frozenset(
    {"accuracy", "electronic_temperature", "max_iterations", "mixer_damping", "guess"}
)
MAX_Z = 86  # GFN parametrisations cover H to Rn


class XTBBackend(Backend):
    """Extended tight binding through tblite, in process."""

    name: ClassVar[str] = "xtb"

    def __init__(self, reference: str, spec: dict[str, Any]) -> None:
        super().__init__(reference, spec)
        method = str(spec.get("method", "GFN2-xTB"))
        if method.lower() not in METHODS:
            raise PilipError(
                f"{self.key('method')}: unknown xtb method {method!r}; use one of "
                f"{', '.join(METHODS.values())}"
            )
        if spec.get("basis") or spec.get("cbs"):
            raise PilipError(
                f"{self.key('basis')}: xtb has no basis set or CBS recipe; remove basis/cbs"
            )
        self.method = METHODS[method.lower()]
        self.options = self._checked_options(spec.get("options"), "options")
        retry = spec.get("retry_options")
        self.retry_options = self._checked_options(retry, "retry_options") if retry else None

    def _checked_options(self, options: Any, field: str) -> dict[str, Any]:
        options = dict(options or {})
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise PilipError(
                f"{self.key(field)}: unknown xtb option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(OPTIONS))}"
            )
        return options

    def check(self, configs: list[dict[str, Any]]) -> None:
        super().check(configs)
        try:
            import tblite.ase  # noqa: F401
        except ImportError:
            raise PilipError(
                f"reference {self.reference!r} needs tblite, which is not installed; "
                "run: pip install 'pilip[xtb]'"
            ) from None
        for config in configs:
            beyond = sorted({int(z) for z in config["numbers"] if not 1 <= int(z) <= MAX_Z})
            if beyond:
                raise PilipError(
                    f"configuration {config['id']}: atomic number(s) {beyond} are outside "
                    f"{self.method} (H..Rn); use another reference for {self.reference!r}"
                )

    def provenance(self) -> dict[str, Any]:
        try:
            version = metadata.version("tblite")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return {
            "program": "tblite",
            "program_version": version,
            "method": self.method,
            "options": dict(self.options),
        }

    def run(
        self,
        configs: list[dict[str, Any]],
        results: Path,
        *,
        threads: int,
        gradients: bool,
        scratch: Path,
        retry_options: dict[str, Any] | None,
        timeout_s: float | None,
    ) -> None:
        todo = pending_configs(configs, results)
        if not todo:
            return
        provenance = self.provenance()
        with open_results_for_append(results) as fh:
            for config in todo:
                record = self._compute(config, gradients, retry_options, threads, provenance)
                append_result(fh, record)

    def _compute(
        self,
        config: dict[str, Any],
        gradients: bool,
        retry_options: dict[str, Any] | None,
        threads: int,
        provenance: dict[str, Any],
    ) -> dict[str, Any]:
        attempts = [self.options]
        if retry_options is not None:
            attempts.append({**self.options, **retry_options})
        errors: list[str] = []
        start = time.perf_counter()
        for options in attempts:
            try:
                energy, forces = self._single_point(config, options, gradients)
            except Exception as exc:  # tblite reports every failure as some exception
                errors.append(f"{type(exc).__name__}: {exc}".strip())
                continue
            return result_record(
                config["id"],
                status="ok",
                energy=energy,
                forces=forces,
                components=None,
                error=None,
                wall_time=time.perf_counter() - start,
                attempts=len(errors) + 1,
                threads=threads,
                provenance=provenance,
            )
        return result_record(
            config["id"],
            status="failed",
            energy=None,
            forces=None,
            components=None,
            error="; retry: ".join(errors),
            wall_time=time.perf_counter() - start,
            attempts=len(errors),
            threads=threads,
            provenance=provenance,
        )

    def _single_point(
        self, config: dict[str, Any], options: dict[str, Any], gradients: bool
    ) -> tuple[float, list[list[float]] | None]:
        """Energy (eV) and, when asked, forces (eV/A) of one configuration."""
        from ase import Atoms
        from tblite.ase import TBLite

        atoms = Atoms(numbers=config["numbers"], positions=config["positions"])
        atoms.calc = TBLite(
            method=self.method,
            charge=int(config["charge"]),
            multiplicity=int(config["multiplicity"]),
            verbosity=0,
            **options,
        )
        energy = float(atoms.get_potential_energy())
        forces = atoms.get_forces().tolist() if gradients else None
        return energy, forces
