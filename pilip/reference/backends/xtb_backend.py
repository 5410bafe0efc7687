"""GFN2-xTB (and GFN1/IPEA1) through tblite: a cheap reference for tests and pre-training.

Runs in the main interpreter, milliseconds per small molecule. Energies in eV and forces in
eV/A come straight from ``tblite.ase.TBLite``; there are no basis-set components to store.
A geometry that runs past ``timeout_s`` is recorded as a timeout once tblite returns (its
self-consistent cycle cannot be interrupted from Python; ``max_iterations`` bounds it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pilip.errors import PilipError
from pilip.reference.backends.base import Backend, compute_pending, installed_version

METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB", "ipea1-xtb": "IPEA1-xTB"}
# tblite.ase.TBLite keywords a user may set; charge and multiplicity come from each config
OPTIONS = frozenset(
    {"accuracy", "electronic_temperature", "max_iterations", "mixer_damping", "guess"}
)
MAX_Z = 86  # GFN parametrisations cover H to Rn


class XTBBackend(Backend):
    """Extended tight binding through tblite, in process."""

    name: ClassVar[str] = "xtb"
    in_process: ClassVar[bool] = True

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
        return {
            "program": "tblite",
            "program_version": installed_version("tblite"),
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
        compute_pending(
            configs,
            results,
            lambda config, options: self._single_point(config, options, gradients),
            options=self.options,
            retry_options=retry_options,
            threads=threads,
            provenance=self.provenance(),
            timeout_s=timeout_s,
        )

    def energy_and_forces(self, config: dict[str, Any]) -> tuple[float, list[list[float]]]:
        """Energy (eV) and forces (eV/A) of one configuration with this reference's options;
        raises what tblite raises (e.g. an SCF that does not converge)."""
        energy, forces, _ = self._single_point(config, self.options, gradients=True)
        return energy, forces

    def _single_point(
        self, config: dict[str, Any], options: dict[str, Any], gradients: bool
    ) -> tuple[float, list[list[float]] | None, dict[str, float]]:
        """Energy (eV), forces (eV/A) when asked, and no components, of one configuration."""
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
        return energy, forces, {}
