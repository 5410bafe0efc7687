"""PySCF as a reference backend: HF, MP2, CCSD and CCSD(T), single bases and CBS recipes.

pilip registers this class only through the ``pilip.backends`` entry point in pyproject.toml,
exactly as an outside package would register its own backend (docs/backends.md). A reference::

    mp2_cbs_pyscf:
      backend: pyscf
      method: mp2/cc-pv[dt]z        # or a `cbs:` recipe, as for psi4 (pilip.reference.cbs)
      options: {freeze_core: true}

Conventional (not density-fitted) integrals throughout, so energies agree with Psi4's
``scf_type pk`` / ``mp2_type conv`` / conventional CC to ~1e-8 Eh. Runs in process; the CBS
arithmetic and stored components (``scf/<basis>``, ``<method>_corl/<basis>``, Hartree) are
``pilip.reference.cbs``'s, shared with the Psi4 backend. Analytic gradients for HF and MP2.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

from pilip import units
from pilip.errors import PilipError
from pilip.reference import cbs
from pilip.reference.backends.base import (
    Backend,
    check_closed_shell,
    check_spin,
    compute_pending,
    installed_version,
)

SPEC_KEYS = {"backend", "method", "basis", "cbs", "options", "retry_options"}
METHODS = ("hf", "mp2", "ccsd", "ccsd(t)")
GRADIENT_METHODS = ("hf", "mp2")
# PySCF option -> type; defaults are tight so that energies match Psi4 to ~1e-8 Eh
OPTIONS: dict[str, type | tuple[type, ...]] = {
    "reference": str,  # rhf | uhf
    "freeze_core": bool,  # freeze the chemical core orbitals in correlated methods
    "conv_tol": float,  # SCF energy convergence, Hartree
    "conv_tol_grad": float,  # SCF orbital-gradient convergence
    "max_cycle": int,  # SCF iterations
    "level_shift": float,  # Hartree; helps difficult SCF convergence
    "damp": float,  # SCF density damping factor, 0..1
    "diis_space": int,
    "cc_conv_tol": float,  # CCSD energy convergence, Hartree
    "cc_conv_tol_normt": float,  # CCSD amplitude convergence
    "cc_max_cycle": int,
    "max_memory": int,  # MB
}
DEFAULTS = {
    "reference": "rhf",
    "freeze_core": False,
    "conv_tol": 1e-12,
    "conv_tol_grad": 1e-8,
    "max_cycle": 100,
    "cc_conv_tol": 1e-10,
    "cc_conv_tol_normt": 1e-8,
}


class PySCFBackend(Backend):
    """In-process PySCF energies (and HF/MP2 gradients) of a method string or CBS recipe."""

    name: ClassVar[str] = "pyscf"

    def __init__(self, reference: str, spec: dict[str, Any]) -> None:
        super().__init__(reference, spec)
        unknown = sorted(set(spec) - SPEC_KEYS)
        if unknown:
            raise PilipError(
                f"{self.key(unknown[0])}: not a pyscf reference key; use "
                f"{', '.join(sorted(SPEC_KEYS - {'backend'}))}"
            )
        self.options = {**DEFAULTS, **self._checked_options("options")}
        if spec.get("retry_options") is not None:
            self._checked_options("retry_options")
        self.recipe = self._recipe()
        field = "cbs" if "cbs" in spec else "method"
        for stage in self.recipe.stages:
            for method in (stage.method, stage.lesser):
                if method is not None and method not in METHODS:
                    raise PilipError(
                        f"{self.key(field)}: pyscf backend runs {', '.join(METHODS)}, not "
                        f"{method!r}; use the psi4 backend for it"
                    )
            for basis in stage.bases:
                if not basis_known(basis):
                    raise PilipError(
                        f"{self.key(field)}: basis set {basis!r} is unknown to PySCF; check "
                        "the spelling (e.g. cc-pvdz, aug-cc-pvtz, def2-svp)"
                    )

    def _checked_options(self, field: str) -> dict[str, Any]:
        raw = self.spec.get(field) or {}
        if not isinstance(raw, dict):
            raise PilipError(f"{self.key(field)} must be a mapping of PySCF options")
        out = {}
        for name, value in raw.items():
            if name not in OPTIONS:
                raise PilipError(
                    f"{self.key(field)}.{name}: unknown pyscf option; known: "
                    f"{', '.join(sorted(OPTIONS))}"
                )
            wanted = OPTIONS[name]
            if wanted is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
                raise PilipError(
                    f"{self.key(field)}.{name}: expected {wanted.__name__}, got {value!r}"
                )
            if name == "reference" and value.lower() not in ("rhf", "uhf"):
                raise PilipError(f"{self.key(field)}.reference: use rhf or uhf, not {value!r}")
            out[name] = value.lower() if name == "reference" else value
        return out

    def _recipe(self) -> cbs.Recipe:
        method, basis, recipe = (self.spec.get(k) for k in ("method", "basis", "cbs"))
        if recipe is not None:
            if method is not None or basis is not None:
                raise PilipError(f"{self.key('cbs')}: give either `method` or `cbs`, not both")
            return cbs.parse_cbs_recipe(recipe, where=self.key("cbs"))
        if not isinstance(method, str) or not method.strip():
            raise PilipError(
                f"{self.key('method')} is missing; set e.g. mp2/cc-pv[dt]z or a `cbs` recipe"
            )
        if basis is not None:
            if "/" in method:
                raise PilipError(f"{self.key('basis')}: method {method!r} already names a basis")
            method = f"{method}/{basis}"
        elif "/" not in method:
            raise PilipError(
                f"{self.key('method')}: {method!r} has no basis; write method/basis "
                "(e.g. mp2/cc-pvdz) or set `basis`"
            )
        return cbs.parse_method_string(method, where=self.key("method"))

    def check(self, configs: list[dict[str, Any]]) -> None:
        """Electron count, closed shell for RHF, and basis functions for every element."""
        check_spin(configs, self.reference)
        if self.options["reference"] == "rhf":
            check_closed_shell(configs, self.reference, self.recipe.label)
        from pyscf.data.elements import ELEMENTS

        elements = sorted({int(z) for c in configs for z in c["numbers"]})
        bases = sorted({b for stage in self.recipe.stages for b in stage.bases})
        for basis in bases:
            missing = [ELEMENTS[z] for z in elements if not basis_has_element(basis, ELEMENTS[z])]
            if missing:
                raise PilipError(
                    f"{self.key('cbs' if 'cbs' in self.spec else 'method')}: basis set {basis} "
                    f"has no functions for {', '.join(missing)}; choose one that covers them"
                )

    def provenance(self) -> dict[str, Any]:
        return {
            "program": "pyscf",
            "program_version": installed_version("pyscf"),
            "method": self.recipe.label,
            "options": dict(self.options),
        }

    def extrapolate(self, components: dict[str, float], formula: dict[str, Any] | None) -> float:
        """Total (Hartree) from components: this recipe, ``{"method": ...}`` or ``{"cbs": ...}``."""
        return self.formula_recipe(formula).total_from_components(components)

    def formula_label(self, formula: dict[str, Any] | None) -> str:
        """The method string (or description) of the recipe a formula describes."""
        return self.formula_recipe(formula).label

    def formula_recipe(self, formula: dict[str, Any] | None) -> cbs.Recipe:
        """The recipe of ``formula``: this one (None), ``{"method": ...}`` or ``{"cbs": ...}``."""
        if not formula:
            recipe = self.recipe
        elif set(formula) == {"method"}:
            recipe = cbs.parse_method_string(str(formula["method"]), where="formula.method")
        elif set(formula) == {"cbs"}:
            recipe = cbs.parse_cbs_recipe(formula["cbs"], where="formula.cbs")
        else:
            raise PilipError(
                "formula: for pyscf labels give {method: mp2/cc-pv[dt]z} or {cbs: {...}} "
                f"(a pilip.reference.cbs recipe), got keys {sorted(formula)}"
            )
        return recipe

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
        jobs = cbs.plan_jobs(self.recipe, gradients=gradients)
        unsupported = sorted({j.method for j in jobs if j.gradient} - set(GRADIENT_METHODS))
        if unsupported:
            raise PilipError(
                f"references.{self.reference}: pyscf backend has analytic gradients for "
                f"{', '.join(GRADIENT_METHODS)} only, not {', '.join(unsupported)}"
            )
        from pyscf import lib

        lib.num_threads(threads)
        compute_pending(
            configs,
            results,
            lambda config, options: self._single_point(config, options, jobs, scratch),
            options=self.options,
            retry_options=retry_options,
            threads=threads,
            provenance=self.provenance(),
            timeout_s=timeout_s,
        )

    def _single_point(
        self, config: dict[str, Any], options: dict[str, Any], jobs: list[cbs.Job], scratch: Path
    ) -> tuple[float, list[list[float]] | None, dict[str, float]]:
        """Energy (eV), forces (eV/A) for gradient jobs, components (Hartree)."""
        per_job, gradients = [], {}
        for job in jobs:
            energies, gradient = run_job(config, job, options, scratch)
            per_job.append(energies)
            if gradient is not None:
                gradients[(job.method, job.basis)] = gradient
        totals = cbs.totals_from_jobs(jobs, per_job)
        energy = self.recipe.total(totals) * units.HARTREE_TO_EV
        forces = None
        if gradients:
            n_atoms = len(config["numbers"])
            total = [[0.0, 0.0, 0.0] for _ in range(n_atoms)]
            for key, weight in self.recipe.gradient_weights().items():
                for row, grad_row in zip(total, gradients[key], strict=True):
                    for k in range(3):
                        row[k] += weight * float(grad_row[k])
            scale = -units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
            forces = [[scale * x for x in row] for row in total]
        return energy, forces, cbs.components_from_totals(totals)


def run_job(
    config: dict[str, Any], job: cbs.Job, options: dict[str, Any], scratch: Path
) -> tuple[dict[str, float], Any]:
    """One PySCF calculation: total energies (Hartree) by method, and the gradient of
    ``job.method`` (Hartree/Bohr, (n_atoms, 3)) when ``job.gradient``."""
    from pyscf import cc, gto, mp, scf
    from pyscf.data.elements import chemcore

    mol = gto.M(
        atom=[
            (int(z), tuple(xyz))
            for z, xyz in zip(config["numbers"], config["positions"], strict=True)
        ],
        basis=job.basis,
        charge=int(config["charge"]),
        spin=int(config["multiplicity"]) - 1,
        unit="Angstrom",
        verbose=0,
        max_memory=options.get("max_memory", 4000),
    )
    mf = (scf.UHF if options["reference"] == "uhf" else scf.RHF)(mol)
    mf.chkfile = None
    mf.conv_tol = options["conv_tol"]
    mf.conv_tol_grad = options["conv_tol_grad"]
    mf.max_cycle = options["max_cycle"]
    for name in ("level_shift", "damp", "diis_space"):
        if name in options:
            setattr(mf, name, options[name])
    energies = {"hf": float(mf.kernel())}
    if not mf.converged:
        raise RuntimeError(f"SCF did not converge in {mf.max_cycle} cycles")
    frozen = chemcore(mol) if options["freeze_core"] else None
    gradient = None
    if job.gradient and job.method == "hf":
        gradient = mf.nuc_grad_method().kernel()
    if job.method in ("mp2", "ccsd", "ccsd(t)"):
        mp2 = mp.MP2(mf, frozen=frozen)
        mp2.kernel()
        energies["mp2"] = float(mp2.e_tot)
        if job.gradient and job.method == "mp2":
            gradient = mp2.nuc_grad_method().kernel()
    if job.method in ("ccsd", "ccsd(t)"):
        ccsd = cc.CCSD(mf, frozen=frozen)
        ccsd.conv_tol = options["cc_conv_tol"]
        ccsd.conv_tol_normt = options["cc_conv_tol_normt"]
        if "cc_max_cycle" in options:
            ccsd.max_cycle = options["cc_max_cycle"]
        ccsd.kernel()
        if not ccsd.converged:
            raise RuntimeError(f"CCSD did not converge in {ccsd.max_cycle} cycles")
        energies["ccsd"] = float(ccsd.e_tot)
        if job.method == "ccsd(t)":
            energies["ccsd(t)"] = float(ccsd.e_tot + ccsd.ccsd_t())
    return energies, gradient


def basis_known(basis: str) -> bool:
    """Whether PySCF knows a basis set of this name (any element)."""
    from pyscf.gto import basis as pyscf_basis

    return pyscf_basis._format_basis_name(basis) in pyscf_basis.ALIAS


def basis_has_element(basis: str, symbol: str) -> bool:
    """Whether PySCF's basis set has functions for the element ``symbol``."""
    from pyscf.gto import basis as pyscf_basis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PySCF suggests basis-set-exchange for missing ones
        try:
            return bool(pyscf_basis.load(basis, symbol))
        except Exception:  # PySCF raises several kinds for a missing element
            return False
