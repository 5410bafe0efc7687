"""The Psi4 backend: energies (and gradients) from Psi4 through the worker, CBS by pilip.

A reference entry::

    mp2_cbs:
      backend: psi4
      method: mp2/cc-pv[dt]z        # Psi4 syntax: scf/cc-pvdz, ccsd(t)/cc-pv[dt]z, a+D:b ...
      options: {freeze_core: true}  # Psi4 options, passed through (``memory`` too)

a DFT functional Psi4 knows, with one basis (analytic gradients; ``-d3*`` dispersion needs
Grimme's ``dftd3`` program on the worker's PATH, ``-d2`` and wB97X-D's ``-d`` do not)::

    dft_svp:
      backend: psi4
      method: wb97x-d/def2-svp

or a composite recipe instead of ``method`` (see ``pilip.reference.cbs.parse_cbs_recipe``)::

    cbs:
      scf: {basis: cc-pv[tq]z, scheme: scf_xtpl_helgaker_2}
      corl: {method: mp2, basis: cc-pv[tq]z}
      delta: [{method: ccsd(t), lesser: mp2, basis: cc-pvdz}]

The recipe becomes a list of Psi4 calculations (``pilip.reference.cbs.plan_jobs``: one per basis, as
Psi4's ``cbs()`` plans them). One worker process (``pilip/reference/worker/psi4_worker.py``, under
the
Psi4 interpreter of ``pilip.reference.psi4_env``) computes a whole chunk and appends raw lines
(Hartree,
Hartree/Bohr) to ``<results stem>.psi4.jsonl``; this class turns each into a results line: CBS
total by ``pilip.reference.cbs``, energy in eV, forces in eV/A, every component energy in Hartree.
Psi4's text output goes to ``<results stem>.psi4.out``
(``chunk.results.jsonl`` -> ``chunk.results.psi4.out``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pilip import units
from pilip.atomic_io import disk_nearly_full, no_space_message
from pilip.errors import PilipError
from pilip.reference import cbs
from pilip.reference.backends.base import (
    Backend,
    append_result,
    check_closed_shell,
    check_spin,
    open_results_for_append,
    read_results,
    result_record,
)
from pilip.reference.backends.psi4_basis_sets import BASIS_ELEMENTS
from pilip.reference.backends.psi4_functionals import FUNCTIONALS
from pilip.reference.psi4_env import WORKER, psi4_python

SPEC_KEYS = {"backend", "method", "basis", "cbs", "options", "retry_options"}
OPEN_SHELL_REFERENCES = {"uhf", "rohf", "cuhf", "uks"}
POLL_S = 0.5  # how often the running worker's new lines are turned into results lines
STARTUP_GRACE_S = 120.0  # import of psi4 plus basis-set loading, before the first geometry
_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge "
    "As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm "
    "Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn"
).split()


def canonical_basis_name(name: str) -> str:
    """Psi4's file name of a basis set: ``6-31+G(d,p)`` -> ``6-31pg_d_p_``."""
    out = name.strip().lower()
    for old, new in (("(", "_"), (")", "_"), (",", "_"), ("*", "s"), ("+", "p")):
        out = out.replace(old, new)
    return out


def basis_elements(name: str) -> set[int]:
    """Atomic numbers a Psi4 basis set covers (empty when Psi4 does not ship it)."""
    ranges = BASIS_ELEMENTS.get(canonical_basis_name(name))
    if ranges is None:
        return set()
    out: set[int] = set()
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out


def _symbol(z: int) -> str:
    return _SYMBOLS[z] if 0 < z < len(_SYMBOLS) else f"Z={z}"


# the worker's exit status, and its error line's tag, for a geometry that failed because of the
# disk (an I/O error, or a nearly full folder), which it does not record (psi4_worker.py)
EXIT_DISK_FULL = 4
DISK_TAG = "psi4_worker: error: disk: "
# the worker's exit status after a geometry's timeout line: start a fresh worker for the rest
EXIT_FRESH_START = 5


class Psi4Backend(Backend):
    """Psi4 energies (and analytic gradients) of a method string or composite CBS recipe."""

    name: ClassVar[str] = "psi4"
    # the worker's interpreter as configured (``labelling.psi4_python``), set by pilip label;
    # None: ``$PILIP_PSI4_PYTHON`` or found (``pilip.reference.psi4_env``)
    configured_python: str | None = None

    def __init__(self, reference: str, spec: dict[str, Any]) -> None:
        super().__init__(reference, spec)
        unknown = set(spec) - SPEC_KEYS
        if unknown:
            raise PilipError(
                f"{self.key(sorted(unknown)[0])}: not a psi4 reference key; use "
                f"{', '.join(sorted(SPEC_KEYS - {'backend'}))}"
            )
        self.options = self._options("options")
        retry = spec.get("retry_options")
        self.retry_options = self._options("retry_options") if retry is not None else None
        self.recipe = self._recipe()
        for stage in self.recipe.stages:
            for basis in stage.bases:
                self._check_basis(basis, stage)
        reference_kind = str(self.options.get("reference", "rhf")).lower()
        self.closed_shell = reference_kind not in OPEN_SHELL_REFERENCES

    # --- validation (no quantum chemistry) -------------------------------------------------

    def _options(self, field: str) -> dict[str, Any]:
        raw = self.spec.get(field) or {}
        if not isinstance(raw, Mapping):
            raise PilipError(f"{self.key(field)} must be a mapping of Psi4 options")
        out = {}
        for name, value in raw.items():
            key = str(name).lower()
            if key == "basis":
                raise PilipError(
                    f"{self.key(field)}.basis: give the basis in `method` (e.g. mp2/cc-pvdz) "
                    "or in a `cbs` recipe, not as an option"
                )
            if not isinstance(value, (str, int, float, bool, list)):
                raise PilipError(
                    f"{self.key(field)}.{name}: {value!r} is not a Psi4 option value "
                    "(string, number, boolean or list)"
                )
            out[key] = value
        return out

    def _recipe(self) -> cbs.Recipe:
        method, basis, recipe = (self.spec.get(k) for k in ("method", "basis", "cbs"))
        if recipe is not None:
            if method is not None or basis is not None:
                raise PilipError(
                    f"{self.key('cbs')}: give either `method` or a `cbs` recipe, not both"
                )
            return cbs.parse_cbs_recipe(recipe, where=self.key("cbs"))
        if not isinstance(method, str) or not method.strip():
            raise PilipError(
                f"{self.key('method')} is missing; set a Psi4 method string such as "
                "mp2/cc-pv[dt]z, or a `cbs` recipe"
            )
        if basis is not None:
            if "/" in method:
                raise PilipError(
                    f"{self.key('basis')}: method {method!r} already names a basis; drop one"
                )
            method = f"{method}/{basis}"
        elif "/" not in method:
            raise PilipError(
                f"{self.key('method')}: {method!r} has no basis; write method/basis "
                "(e.g. mp2/cc-pvdz) or set `basis`"
            )
        return cbs.parse_method_string(method, where=self.key("method"))

    def _check_basis(self, basis: str, stage: cbs.Stage) -> None:
        if canonical_basis_name(basis) in BASIS_ELEMENTS:
            return
        close = difflib.get_close_matches(canonical_basis_name(basis), BASIS_ELEMENTS, n=4)
        field = "cbs" if "cbs" in self.spec else "method"
        hint = f"did you mean {', '.join(close)}?" if close else "see Psi4's basis-set list"
        raise PilipError(
            f"{self.key(field)}: basis set {basis!r} ({stage.name} stage) is not one Psi4 "
            f"ships; {hint}"
        )

    def check(self, configs: list[dict[str, Any]]) -> None:
        """Electron count, closed shell, elements of every basis, the Psi4 interpreter."""
        check_spin(configs, self.reference)
        if self.closed_shell:
            check_closed_shell(configs, self.reference, self.recipe.label)
        bases = {b for stage in self.recipe.stages for b in stage.bases}
        elements = {int(z) for config in configs for z in config["numbers"]}
        for basis in sorted(bases):
            missing = sorted(elements - basis_elements(basis))
            if missing:
                raise PilipError(
                    f"{self.key('method' if 'method' in self.spec else 'cbs')}: basis set "
                    f"{basis} has no functions for {', '.join(_symbol(z) for z in missing)}; "
                    "choose a basis set that covers every element"
                )
        self._check_programs(self.interpreter())

    def interpreter(self) -> Any:
        """The Psi4 worker's interpreter (``pilip.reference.psi4_env.Psi4Python``) for this
        setting."""
        return psi4_python(self.configured_python)

    def _check_programs(self, interpreter: Any) -> None:
        """The external programs Psi4 runs for a functional's dispersion (dftd3, gcp)."""
        for stage in self.recipe.stages:
            if not cbs.is_functional(stage.method):
                continue
            for program in filter(None, FUNCTIONALS[stage.method].split(",")):
                path = interpreter.environment().get("PATH", "")
                if shutil.which(program, path=path) is None:
                    raise PilipError(
                        f"{self.key('method')}: {stage.method} needs the {program!r} program, "
                        "which Psi4 1.3.2 runs for it and which is not on PATH (Debian ships "
                        f"none); install it, or use a functional Psi4 computes alone, e.g. "
                        "wb97x-d or b3lyp-d2"
                    )

    # --- running ---------------------------------------------------------------------------

    def provenance(self) -> dict[str, Any]:
        try:
            version = self.interpreter().psi4_version
        except PilipError:
            version = "unknown"
        return {
            "program": "psi4",
            "program_version": version,
            "method": self.recipe.label,
            "options": dict(self.options),
        }

    def _fingerprint(self, jobs: list[cbs.Job]) -> str:
        """Identifies raw lines of this exact plan, so a changed recipe never reuses them."""
        payload = json.dumps(
            [[j.method, j.basis, j.gradient] for j in jobs] + [self.options], sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

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
        """Compute every configuration without a line in ``results``, one worker per chunk.

        Raw worker lines already on disk (a previous run killed between a geometry and its
        conversion) are converted first; a worker that crashes or hangs past the timeout
        costs only the geometry it was computing, recorded as failed/timeout, and is
        restarted for the rest (one that dies between two geometries costs none; after a
        timeout a fresh worker takes over, Psi4's state being suspect). PilipError when the
        worker refuses the request, or when the disk (not a geometry) failed: the error names
        the folder, and nothing is recorded for that geometry.
        """
        results = Path(results)
        jobs = cbs.plan_jobs(self.recipe, gradients=gradients)
        raw = results.with_suffix(".psi4.jsonl")
        run = _Run(self, jobs, results, raw, threads, gradients, self._fingerprint(jobs))
        done = read_results(results)
        pending = [c for c in configs if c["id"] not in done]
        run.convert(raw, {c["id"] for c in pending}, start=0)
        raw.unlink(missing_ok=True)  # its useful lines are results now; failures are redone
        done = read_results(results)
        pending = [c for c in configs if c["id"] not in done]
        if not pending:
            return
        interpreter = self.interpreter()
        retry = None if retry_options is None else self._validated_retry(retry_options)
        Path(scratch).mkdir(parents=True, exist_ok=True)
        # a folder of its own, so that runs sharing `scratch` never share request files
        work = Path(tempfile.mkdtemp(prefix="psi4-run-", dir=scratch))
        try:
            while pending:
                run.launch(interpreter, pending, work, retry, timeout_s)
                done = read_results(results)
                pending = [c for c in configs if c["id"] not in done]
        finally:
            shutil.rmtree(work, ignore_errors=True)
        raw.unlink(missing_ok=True)

    def _validated_retry(self, retry_options: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(retry_options, Mapping):
            raise PilipError(f"{self.key('retry_options')} must be a mapping of Psi4 options")
        return {str(k).lower(): v for k, v in retry_options.items()}

    # --- results ---------------------------------------------------------------------------

    def record_from_raw(
        self, raw: dict[str, Any], jobs: list[cbs.Job], threads: int, gradients: bool
    ) -> dict[str, Any]:
        """A results line (eV, eV/A, components in Hartree) from one raw worker line."""
        provenance = self.provenance_from(raw)
        status, error = raw.get("status"), raw.get("error")
        energy = forces = None
        components: dict[str, float] = {}
        if status == "ok":
            try:
                totals = cbs.totals_from_jobs(jobs, raw["energies"])
                components = cbs.components_from_totals(totals)
                energy = self.recipe.total(totals) * units.HARTREE_TO_EV
                if gradients:
                    forces = self._forces(jobs, raw["gradients"])
            except (KeyError, ValueError, TypeError, ZeroDivisionError) as exc:
                status, error = "failed", f"CBS arithmetic: {type(exc).__name__}: {exc}"
                energy = forces = None
        elif status not in ("failed", "timeout"):
            status, error = "failed", f"worker status {status!r}: {error}"
        return result_record(
            raw["config_id"],
            status=status,
            energy=energy,
            forces=forces,
            components=components,
            error=error,
            wall_time=float(raw.get("wall_time", 0.0)),
            attempts=int(raw.get("attempts", 1)),
            threads=threads,
            provenance=provenance,
        )

    def provenance_from(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {
            "program": "psi4",
            "program_version": str(raw.get("psi4_version") or "unknown"),
            "method": self.recipe.label,
            "options": dict(self.options),
        }

    def _forces(self, jobs: list[cbs.Job], gradients: list) -> list[list[float]]:
        """-dE/dx in eV/A from the gradient calculations (Hartree/Bohr), CBS-weighted."""
        pairs = zip(jobs, gradients, strict=True)
        by_key = {(j.method, j.basis): g for j, g in pairs if j.gradient}
        total = None
        for key, weight in self.recipe.gradient_weights().items():
            gradient = by_key[key]
            if total is None:
                total = [[0.0, 0.0, 0.0] for _ in gradient]
            for row, grow in zip(total, gradient, strict=True):
                for k in range(3):
                    row[k] += weight * grow[k]
        scale = -units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
        return [[scale * x for x in row] for row in total]

    def extrapolate(self, components: dict[str, float], formula: dict[str, Any] | None) -> float:
        """Total energy in Hartree from stored components with this or another recipe.

        ``formula``: None (this reference's recipe); ``{"method": "mp2/cc-pv[dt]z"}``;
        ``{"cbs": {...}}`` (a composite recipe); or per-stage overrides of this recipe such
        as ``{"scf": "scf_xtpl_helgaker_2", "corl": {"scheme": ..., "alpha": 2.4}}``. An SCF
        override that needs more bases than the stage has takes the correlation stage's.
        """
        return self.formula_recipe(formula).total_from_components(components)

    def formula_label(self, formula: dict[str, Any] | None) -> str:
        """The method string (or description) of the recipe a formula describes."""
        return self.formula_recipe(formula).label

    def formula_recipe(self, formula: Mapping[str, Any] | None) -> cbs.Recipe:
        """The recipe a ``pilip reextrapolate`` formula describes (see ``extrapolate``)."""
        if not formula:
            return self.recipe
        if not isinstance(formula, Mapping):
            raise PilipError(f"formula must be a mapping, got {formula!r}")
        if "method" in formula:
            return cbs.parse_method_string(str(formula["method"]), where="formula.method")
        if "cbs" in formula:
            return cbs.parse_cbs_recipe(formula["cbs"], where="formula.cbs")
        stages = {stage.name: stage for stage in self.recipe.stages}
        unknown = set(formula) - set(stages)
        if unknown:
            raise PilipError(
                f"formula: stage(s) {sorted(unknown)} not in recipe {self.recipe.label!r} "
                f"(stages: {', '.join(stages)}); or give `method` or `cbs`"
            )
        new = []
        for name, stage in stages.items():
            override = formula.get(name)
            if override is None:
                new.append(stage)
                continue
            if isinstance(override, str):
                override = {"scheme": override}
            if not isinstance(override, Mapping) or set(override) - {"scheme", "alpha", "basis"}:
                raise PilipError(
                    f"formula.{name}: give a scheme name or a mapping of scheme, alpha, basis"
                )
            basis = override.get("basis")
            scheme = override.get("scheme", stage.scheme)
            if basis is None and scheme in cbs.SCHEMES:
                basis = self._series(stage)
                wanted = cbs.SCHEMES[scheme].n_points
                corl = stages.get("corl")
                if wanted != len(stage.bases) and corl is not None and len(corl.bases) == wanted:
                    basis = self._series(corl)
            lesser = stage.lesser
            made = cbs._make_stage(
                name,
                stage.method,
                lesser,
                basis,
                scheme,
                override.get("alpha", stage.alpha),
                f"formula.{name}",
            )
            new.append(made)
        return cbs.Recipe(stages=tuple(new), label=cbs.describe(new))

    @staticmethod
    def _series(stage: cbs.Stage) -> str:
        if len(stage.bases) == 1:
            return stage.bases[0]
        first, last = stage.bases[0], stage.bases[-1]
        i = next(k for k in range(len(first)) if first[k] != last[k])
        return f"{first[:i]}[{''.join(b[i] for b in stage.bases)}]{first[i + 1 :]}"


class _Run:
    """One ``run`` call: launches workers, watches them, converts their raw lines."""

    def __init__(self, backend, jobs, results, raw, threads, gradients, fingerprint):
        self.backend = backend
        self.jobs = jobs
        self.results = results
        self.raw = raw
        self.threads = int(threads)
        self.gradients = gradients
        self.fingerprint = fingerprint
        self.offset = 0  # bytes of the raw file already converted
        self.signalled_at_start = False  # a worker was killed before its first geometry

    def convert(self, raw: Path, wanted: set[str], start: int) -> int:
        """Append results lines for complete raw lines after byte ``start``; new offset."""
        try:
            with open(raw, "rb") as fh:
                fh.seek(start)
                data = fh.read()
        except FileNotFoundError:
            return start
        end = data.rfind(b"\n") + 1
        records = []
        for line in data[:end].split(b"\n"):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if item.get("plan") != self.fingerprint or item.get("config_id") not in wanted:
                continue
            wanted.discard(item["config_id"])
            records.append(
                self.backend.record_from_raw(item, self.jobs, self.threads, self.gradients)
            )
        if records:
            with open_results_for_append(self.results) as out:
                for record in records:
                    append_result(out, record)
        return start + end

    def launch(self, interpreter, pending, scratch: Path, retry, timeout_s) -> None:
        """Run one worker over ``pending``; every config it could not finish is accounted for.

        Returns normally when the worker finished, crashed or was killed; in the latter two
        cases the geometry it was computing gets a failed/timeout line.
        """
        needed = set(self.backend.recipe.required_totals())
        request_path = scratch / "psi4-request.json"
        progress = scratch / "psi4-progress.txt"
        stderr_path = scratch / "psi4-stderr.txt"
        request = {
            "configs": pending,
            "jobs": [
                {
                    "method": job.method,
                    "basis": job.basis,
                    "gradient": job.gradient,
                    "variables": job.provides,  # read when Psi4 sets them (more components)
                    "required": [m for m in job.provides if (m, job.basis) in needed],
                }
                for job in self.jobs
            ],
            "options": self.backend.options,
            "retry_options": retry,
            "threads": self.threads,
            # Psi4's own memory; an explicit `memory` in options overrides it per calculation
            "memory_mb": self.backend.program_memory_mb(),
            "timeout_s": timeout_s,
            "results": str(self.raw.resolve()),
            "plan": self.fingerprint,
            "progress": str(progress.resolve()),
            "scratch": str(scratch.resolve()),
            "output": str(self.results.with_suffix(".psi4.out").resolve()),
            "parent_pid": os.getpid(),
        }
        request_path.write_text(json.dumps(request), encoding="utf-8")
        progress.unlink(missing_ok=True)
        wanted = {c["id"] for c in pending}
        started_with = len(wanted)
        self.offset = self.raw.stat().st_size if self.raw.exists() else 0
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                [interpreter.python, str(WORKER), str(request_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=interpreter.environment(self.threads),
            )
            try:
                killed = self._watch(proc, progress, wanted, timeout_s)
            finally:
                # this side failed (a full disk while converting, Ctrl-C): stop the worker
                # before the scratch folder it writes into is removed
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        self.offset = self.convert(self.raw, wanted, self.offset)
        message = _last_line(stderr_path)
        if proc.returncode in (2, 3) and not killed:
            raise PilipError(
                f"references.{self.backend.reference}: the Psi4 worker ({interpreter.python}) "
                f"refused to run: {message.removeprefix('psi4_worker: error: ')}"
            )
        if not wanted:
            return
        if proc.returncode == EXIT_FRESH_START and not killed and len(wanted) < started_with:
            return  # it wrote a timeout line and stopped: Psi4's state is not trusted after it
        if proc.returncode != 0 and not killed:
            # a worker that died on a full disk, or stopped because a geometry failed with an
            # I/O error or while its folders were full (the disk's fault), failed no geometry:
            # stop, resume later. Psi4 may abort on its way out: the tag, not only the status
            for folder, written in ((self.results.parent, self.results), (scratch, scratch)):
                if disk_nearly_full(folder):
                    raise PilipError(no_space_message(written))
            if proc.returncode == EXIT_DISK_FULL or message.startswith(DISK_TAG):
                raise PilipError(self._disk_message(message.removeprefix(DISK_TAG), scratch))
        current = _current_config(progress)
        if current is None and not killed and proc.returncode < 0 and not self.signalled_at_start:
            # killed by a signal while starting (out-of-memory killer, a user): start once more;
            # a worker that cannot start twice is an error, not a failed geometry
            self.signalled_at_start = True
            return
        died = proc.returncode != 0 and not killed
        if died and current not in wanted and len(wanted) < started_with:
            # died between geometries, after finishing one (its line is converted): no
            # geometry to blame; the caller starts a worker for the rest (progress was made,
            # so this cannot repeat for ever)
            return
        if current is None and not killed and proc.returncode != 0:
            raise PilipError(
                f"the Psi4 worker ({interpreter.python}) failed before its first geometry "
                f"(exit status {proc.returncode}): {message}"
            )
        if current is None or current not in wanted:
            reason = "the Psi4 worker finished without a result for it"
            if killed:
                reason = "the Psi4 worker did not start computing within its time limit"
            current = next(c["id"] for c in pending if c["id"] in wanted)
        elif killed:
            reason = (
                f"no result within the per-geometry timeout of {timeout_s} s (the worker was "
                "killed: Psi4 did not return to Python to honour it)"
            )
        else:
            reason = f"the Psi4 worker died (exit status {proc.returncode}): {message}"
        status = "timeout" if killed else "failed"
        record = {
            "config_id": current,
            "status": status,
            "error": reason,
            "attempts": 1,
            "wall_time": 0.0,
            "plan": self.fingerprint,
        }
        with open_results_for_append(self.results) as out:
            append_result(
                out, self.backend.record_from_raw(record, self.jobs, self.threads, self.gradients)
            )

    def _disk_message(self, worker_text: str, scratch: Path) -> str:
        """The one-line error for a worker stopped by its disk (``PATH: REASON`` from it).

        The worker's own scratch folders are gone by now; the error names the scratch folder
        this run was given (``settings.scratch``, default the system temporary folder).
        """
        path, _, reason = worker_text.partition(": ")
        if not reason:
            path, reason = str(self.results), worker_text or "no space left on device"
        given = {  # the worker's absolute names of the files next to the results, as given
            str(f.resolve()): f for f in (self.raw, self.results.with_suffix(".psi4.out"))
        }
        where = scratch.parent if Path(path).is_relative_to(scratch) else given.get(path, path)
        return (
            f"{where}: Psi4 could not write its files ({reason}): free space on that disk, "
            "or set settings.scratch to a roomier folder, and rerun; finished geometries are "
            "kept, this one is computed again"
        )

    def _watch(self, proc, progress: Path, wanted: set[str], timeout_s) -> bool:
        """Wait for the worker, converting lines as they come; kill it if a geometry hangs.

        The worker enforces ``timeout_s`` itself wherever Psi4 runs Python; this is the
        backstop for a calculation stuck inside Psi4's C++ code.
        """
        grace = None if not timeout_s else max(30.0, 0.25 * float(timeout_s))
        last_change = time.monotonic() + STARTUP_GRACE_S
        last_progress = None
        while True:
            try:
                proc.wait(timeout=POLL_S)
                return False
            except subprocess.TimeoutExpired:
                pass
            self.offset = self.convert(self.raw, wanted, self.offset)
            now_progress = _current_config(progress)
            if now_progress != last_progress:
                last_progress, last_change = now_progress, time.monotonic()
            if grace is not None and time.monotonic() - last_change > float(timeout_s) + grace:
                proc.kill()
                proc.wait()
                return True


def _current_config(progress: Path) -> str | None:
    """The id of the geometry the worker started last (its progress file's last line)."""
    try:
        lines = progress.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        return None
    complete = [line for line in lines[:-1] if line.strip()]
    return complete[-1] if complete else None


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return ""
    for line in reversed(lines):
        if line.startswith("psi4_worker: error:"):
            return line
    return lines[-1] if lines else "no message"
