"""A cheap level of theory that runs in this process: the baseline of Delta-learning.

With ``pilip train DATASET --baseline gfn2-xtb`` the model learns reference minus baseline;
at inference energies and forces are baseline + model. This module

- resolves a baseline name (an inline name such as ``gfn2-xtb``, or a ``references:`` entry of
  a config whose backend runs in process; the same resolver as ``pilip label --reference``)
  into a :class:`Baseline` with its full specification (method, options, program and version),
  which goes into the checkpoint;
- reads its labels of many structures from labels tables (``pilip label`` writes them; the
  Delta recipe, pilip.potential.recipes.delta, labels what is missing the same way);
- gives :class:`DeltaModel`, a pilip model whose energy is the wrapped model's plus the
  baseline's, with forces by autograd like any other model. The baseline enters as a constant
  with respect to the parameters, so every loss (energy, forces, PITC, PISC) of the total
  surface has exactly the parameter gradients of the same loss with the baseline's values
  plugged in: nothing is approximated.

Units: Angstrom, eV, eV/A throughout (the backends convert).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pilip import keys
from pilip.errors import PilipError
from pilip.potential.models.common import ShiftedEnergyModel
from pilip.potential.neighbors import segment_sum
from pilip.reference.backends import Backend, get_backend, make_backend

INSTALL_HINTS = {"xtb": "pip install 'pilip[xtb]' (tblite)", "pyscf": "pip install 'pilip[pyscf]'"}


@dataclasses.dataclass
class Baseline:
    """A resolved baseline: its name, config entry and backend. A backend that runs in process
    (tblite) computes any structure; one that does not (Psi4) is a *tabled* baseline: its
    values come from labels tables only (:class:`TabledValues`)."""

    name: str
    spec: dict[str, Any]
    backend: Backend

    @property
    def in_process(self) -> bool:
        return bool(self.backend.in_process)

    def specification(self) -> dict[str, Any]:
        """name, spec, program, program_version, method, options (JSON; checkpoints store it)."""
        return {"name": self.name, "spec": dict(self.spec), **self.backend.provenance()}

    def energy_and_forces(
        self, numbers: np.ndarray, positions: np.ndarray, charge: int = 0, multiplicity: int = 1
    ) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (n_atoms, 3) eV/A of one structure (positions in A)."""
        config = {
            "id": "",
            "numbers": [int(z) for z in numbers],
            "positions": np.asarray(positions, dtype=np.float64).tolist(),
            "charge": int(charge),
            "multiplicity": int(multiplicity),
        }
        energy, forces = self.backend.energy_and_forces(config)
        return float(energy), np.asarray(forces, dtype=np.float64).reshape(-1, 3)


def _backend(name: str, spec: dict[str, Any], where: str, tabled: bool) -> Backend:
    """The backend of a baseline; one that cannot run in process only when ``tabled``."""
    if "backend" not in spec:
        raise PilipError(f"{where}: reference {name!r} has no backend; set references.{name}")
    cls = get_backend(str(spec["backend"]))
    if not cls.in_process and not tabled:
        raise PilipError(
            f"--baseline {name}: backend {cls.name!r} does not run in process, so pilip "
            f"cannot compute it during training or inference; pass its labels of every "
            f"structure with --baseline-labels T (pilip label DATA --reference {name} --forces "
            "-o T) and distill the Delta model into a standalone one, or pretrain on its labels "
            "(--losses energy,forces) and fine-tune with --init MODEL.pt"
        )
    return make_backend(name, spec)


def resolve_baseline(
    name: str, config: dict[str, Any] | None = None, where: str = "", *, tabled: bool = False
) -> Baseline:
    """The baseline called ``name``: a ``references:`` entry of ``config`` or an inline name
    (resolved as ``pilip label --reference`` resolves it: ``gfn2-xtb``, ``b3lyp/def2-svp``).

    ``tabled``: its labels will come from tables, so a level that cannot run in process (Psi4)
    is accepted. One-line PilipError for an unknown name, such a level without ``tabled``, or
    a missing program (tblite).
    """
    from pilip.reference.labelling import resolve_reference

    try:
        reference = resolve_reference(name, config, where or "--config")
    except PilipError as exc:
        raise PilipError(f"--baseline {name!r}: unknown baseline ({exc})") from None
    backend = _backend(reference.name, reference.spec, where or "--baseline", tabled)
    if backend.in_process:
        backend.check([])  # the program is importable (structures are checked when labelled)
    return Baseline(reference.name, reference.spec, backend)


def baseline_from_specification(specification: dict[str, Any], source: str) -> Baseline:
    """Rebuild a checkpoint's baseline; one-line PilipError saying what to install if it
    cannot run here."""
    name, spec = str(specification["name"]), dict(specification["spec"])
    hint = INSTALL_HINTS.get(
        str(spec.get("backend")), f"the package of backend {spec.get('backend')!r}"
    )
    try:
        backend = _backend(name, spec, source, tabled=False)
        backend.check([])
    except PilipError as exc:
        raise PilipError(
            f"{source} is a Delta model over {describe(specification)}, which cannot run "
            f"here ({exc}); install it: {hint}"
        ) from None
    return Baseline(name, spec, backend)


# --- labelling many structures ---------------------------------------------------------------


def structure_key(numbers: np.ndarray, positions: np.ndarray) -> str:
    """Content key of one structure: its atomic numbers and float64 positions (A)."""
    digest = hashlib.sha256(np.ascontiguousarray(numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(positions, dtype=np.float64).tobytes())
    return digest.hexdigest()[:32]


def config_key(config: dict[str, Any]) -> str:
    return structure_key(np.asarray(config["numbers"]), np.asarray(config["positions"]))


@dataclasses.dataclass
class BaselineLabels:
    """Baseline labels of a list of configurations, in their order."""

    config_ids: list[str]
    energy: np.ndarray  # (n,) eV, NaN where the calculation failed
    forces: list[np.ndarray | None]  # (n_atoms, 3) eV/A each, None where it failed
    errors: dict[str, str]  # config id -> error text of the failed ones

    @property
    def ok(self) -> np.ndarray:
        """(n,) bool: the calculation succeeded."""
        return np.isfinite(self.energy)


def _labels_from_records(
    configs: list[dict[str, Any]], records: dict[str, dict[str, Any]], source: str, name: str
) -> BaselineLabels:
    missing = [c["id"] for c in configs if c["id"] not in records]
    if missing:
        raise PilipError(
            f"{source} has no row for {len(missing)} of the {len(configs)} structures (e.g. "
            f"configuration {missing[0]}); label them: pilip label TABLE --reference {name} "
            "--forces -o LABELS, and pass LABELS too"
        )
    energy = np.full(len(configs), np.nan)
    forces: list[np.ndarray | None] = [None] * len(configs)
    errors: dict[str, str] = {}
    for i, config in enumerate(configs):
        record = records[config["id"]]
        if record.get("status") != keys.STATUS_OK or record.get("energy") is None:
            errors[config["id"]] = str(record.get("error") or record.get("status"))
            continue
        if record.get("forces") is None:
            raise PilipError(
                f"{source}: configuration {config['id']} has no forces; relabel with --forces"
            )
        energy[i] = float(record["energy"])
        forces[i] = np.asarray(record["forces"], dtype=np.float64).reshape(-1, 3)
    return BaselineLabels([c["id"] for c in configs], energy, forces, errors)


def method_key(specification: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(program, method, options): what makes two baselines, or labels, the same level."""
    return (
        specification.get("program"),
        specification.get("method"),
        specification.get("options") or {},
    )


def labels_records(
    paths: str | Path | list[str | Path], specification: dict[str, Any], whose: str
) -> dict[str, dict[str, Any]]:
    """Config id -> results record of the labels tables ``paths`` (several are merged); every
    ok row must come from the level of ``specification`` (``whose`` names it in the one-line
    PilipError otherwise)."""
    from pilip.reference import labels

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    table = labels.merge_labels([labels.read_labels(p) for p in paths])
    records = {r["config_id"]: r for r in labels.records_from_table(table)}
    want = method_key(specification)
    for record in records.values():
        got = method_key(record)
        if record.get("status") == keys.STATUS_OK and got != want:
            raise PilipError(
                f"{', '.join(map(str, paths))}: labels by {got[0]} {got[1]!r} options {got[2]}, "
                f"but {whose} is {want[0]} {want[1]!r} options {want[2]}; pass labels of the "
                "same method"
            )
    return records


def read_labels_for(
    path: str | Path | list[str | Path], configs: list[dict[str, Any]], baseline: Baseline
) -> BaselineLabels:
    """Baseline labels of ``configs`` from labels tables (``--baseline-labels``; several are
    merged), checked to come from the same program, method and options as ``baseline``."""
    records = labels_records(path, baseline.backend.provenance(), f"--baseline {baseline.name}")
    source = ", ".join(map(str, [path] if isinstance(path, (str, Path)) else path))
    return _labels_from_records(configs, records, source, baseline.name)


def configs_of_table(path: str | Path) -> list[dict[str, Any]]:
    """Config dicts (id, numbers, positions A, charge, multiplicity) of a configurations or
    dataset table, every row."""
    from pilip.reference.labelling import read_configs

    return read_configs(path)


def match_configs(
    numbers: Tensor, positions: Tensor, offsets: Tensor, configs: list[dict[str, Any]], source: str
) -> list[dict[str, Any]]:
    """The config of each structure (concatenated tensors, float64 positions), matched by
    content: the structures need not come in the table's order or use all its rows."""
    by_key = {config_key(c): c for c in configs}
    out = []
    numbers_np, positions_np = numbers.cpu().numpy(), positions.double().cpu().numpy()
    for i in range(len(offsets) - 1):
        a, b = int(offsets[i]), int(offsets[i + 1])
        config = by_key.get(structure_key(numbers_np[a:b], positions_np[a:b]))
        if config is None:
            raise PilipError(
                f"{source}: structure {i} is not a row of the table (positions differ); "
                "pass the table the structures were read from"
            )
        out.append(config)
    return out


# --- the total surface as a model ------------------------------------------------------------


class BaselineCache:
    """Baseline energies and forces of structures already computed, by content.

    Keys use the positions in the dtype of the batches they will be looked up from, so a
    float32 training batch finds the values labelled from the float64 table.
    """

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._values)

    @staticmethod
    def key(numbers: np.ndarray, positions: np.ndarray) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(numbers, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(positions).tobytes())
        digest.update(str(positions.dtype).encode())
        return digest.hexdigest()[:32]

    def add(
        self, numbers: np.ndarray, positions: np.ndarray, energy: float, forces: np.ndarray
    ) -> None:
        self._values[self.key(numbers, positions)] = (float(energy), np.asarray(forces))

    def get(self, numbers: np.ndarray, positions: np.ndarray) -> tuple[float, np.ndarray] | None:
        return self._values.get(self.key(numbers, positions))


class DeltaModel(ShiftedEnergyModel):
    """E(R) = baseline(R) + model(R), eV; forces by autograd through both.

    The baseline is summed in float64 into the network part (its thousands of eV of total
    energy cancel from the weak losses' differences like the reference energy does). Its
    position gradient is the baseline's forces; its second derivatives are taken as zero, which
    is exact for every parameter gradient (the baseline has no parameters). ``charge`` and
    ``multiplicity`` (ints, all structures) default to a neutral singlet. ``model`` is the
    trained network; ``hparams``/``state_dict`` for checkpoints are the wrapped model's.
    """

    def __init__(
        self,
        model: ShiftedEnergyModel,
        baseline: Baseline,
        cache: BaselineCache | None = None,
        charge: int = 0,
        multiplicity: int = 1,
    ) -> None:
        super().__init__()
        self.model = model
        self.baseline = baseline
        self.cache = cache if cache is not None else BaselineCache()
        self.charge, self.multiplicity = int(charge), int(multiplicity)
        self.energy_shift = model.energy_shift
        self.cutoff = getattr(model, "cutoff", 0.0)
        self.calls = 0  # baseline calculations run (not found in the cache)
        self.seconds = 0.0  # CPU seconds spent in them

    def hparams(self) -> dict[str, Any]:
        return self.model.hparams()

    def baseline_values(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Baseline energies (n_struct,) float64 eV and forces (n_atoms, 3) eV/A, detached."""
        numbers = batch[keys.NUMBERS].detach().cpu().numpy()
        positions = batch[keys.POSITIONS].detach().cpu().numpy()
        n_atoms = batch[keys.N_ATOMS].cpu().numpy()
        energies = np.empty(len(n_atoms))
        forces = np.empty((len(numbers), 3))
        # atoms of one structure are contiguous in pilip batches
        starts = np.concatenate([[0], np.cumsum(n_atoms)])
        for i in range(len(n_atoms)):
            a, b = starts[i], starts[i + 1]
            found = self.cache.get(numbers[a:b], positions[a:b])
            if found is None:
                start = time.process_time()
                try:
                    found = self.baseline.energy_and_forces(
                        numbers[a:b], positions[a:b], self.charge, self.multiplicity
                    )
                except PilipError:
                    raise
                except Exception as exc:
                    raise PilipError(
                        f"baseline {self.baseline.name} failed on a structure of "
                        f"{b - a} atoms: {type(exc).__name__}: {exc}".strip()
                    ) from None
                self.calls += 1
                self.seconds += time.process_time() - start
            energies[i], forces[a:b] = found
        device = batch[keys.POSITIONS].device
        return (
            torch.from_numpy(energies).to(device),
            torch.from_numpy(forces).to(device=device, dtype=batch[keys.POSITIONS].dtype),
        )

    def baseline_energy(self, batch: dict[str, Tensor]) -> Tensor:
        """(n_struct,) float64 baseline energies whose position gradient is -forces."""
        positions = batch[keys.POSITIONS]
        energy, forces = self.baseline_values(batch)
        # value: energy; d/dR: -forces (the displacement is zero, its gradient is not)
        displacement = positions - positions.detach()
        work = (forces * displacement).sum(-1).double()
        n_struct = batch[keys.N_ATOMS].shape[0]
        return energy - segment_sum(work, batch[keys.BATCH], n_struct)

    def network_energy(self, batch: dict[str, Tensor]) -> Tensor:
        """(n_struct,) float64: the model's network part plus the baseline, eV."""
        return self.model.network_energy(batch).double() + self.baseline_energy(batch)

    def reference_energy(self, batch: dict[str, Tensor]) -> Tensor:
        """(n_struct,) float64: the model's reference part (a committee's: its members' mean)."""
        return self.model.reference_energy(batch)


def cache_from_labels(
    labels: BaselineLabels,
    configs: list[dict[str, Any]],
    dtype: torch.dtype,
    cache: BaselineCache | None = None,
) -> BaselineCache:
    """A :class:`BaselineCache` of the ok labels, keyed for batches in ``dtype``."""
    cache = cache if cache is not None else BaselineCache()
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    for i, config in enumerate(configs):
        if labels.ok[i]:
            positions = np.asarray(config["positions"], dtype=np.float64).astype(np_dtype)
            cache.add(np.asarray(config["numbers"]), positions, labels.energy[i], labels.forces[i])
    return cache


class TabledValues:
    """The baseline of a Delta model over a level that cannot run in process: its energies and
    forces of known structures only (a :class:`BaselineCache` filled from labels tables); any
    other structure is a one-line PilipError. Stands in for :class:`Baseline` in DeltaModel."""

    def __init__(self, name: str, source: str) -> None:
        self.name, self.source = name, source

    def energy_and_forces(
        self, numbers: np.ndarray, positions: np.ndarray, charge: int = 0, multiplicity: int = 1
    ) -> tuple[float, np.ndarray]:
        raise PilipError(
            f"baseline {self.name}: a structure of {len(numbers)} atoms is not in {self.source}; "
            f"label it (pilip label DATA --reference {self.name} --forces -o T) and pass T"
        )


def tabled_cache(
    paths: list[str | Path], structures: str | Path | list[str | Path],
    specification: dict[str, Any], dtype: torch.dtype,
) -> BaselineCache:  # fmt: skip
    """The baseline values of every structure of the table(s) ``structures`` that the labels
    tables ``paths`` hold an ok row for, keyed for batches in ``dtype``; labels of another
    program, method or options than ``specification`` are refused in one line."""
    records = labels_records(paths, specification, "the model's baseline")
    cache = BaselineCache()
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    many = [structures] if isinstance(structures, (str, Path)) else list(structures)
    for config in (c for table in many for c in configs_of_table(table)):
        record = records.get(config["id"])
        if record is None or record.get("status") != keys.STATUS_OK or not record.get("forces"):
            continue
        positions = np.asarray(config["positions"], dtype=np.float64).astype(np_dtype)
        forces = np.asarray(record["forces"], dtype=np.float64).reshape(-1, 3)
        cache.add(np.asarray(config["numbers"]), positions, float(record["energy"]), forces)
    return cache


def describe(specification: dict[str, Any]) -> str:
    """``GFN2-xTB (tblite 0.4.0, options {...})`` for logs and reports."""
    options = specification.get("options") or {}
    text = f"{specification.get('method')} ({specification.get('program')} "
    text += f"{specification.get('program_version')}"
    return text + (f", options {json.dumps(options, sort_keys=True)})" if options else ")")
