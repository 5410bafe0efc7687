"""Configuration sampling: seed geometries -> rattled, normal-mode and MD configurations.

A system (``systems.<name>`` in the config) is a seed geometry with a charge and a
multiplicity. Every generator in ``sampling.generators`` runs on it with its own random stream,
derived from ``sampling.seed``, the system name and the generator's position in the list, so
the same config gives identical configurations (ids and positions) on every run. The seed
geometry itself is always the first row (generator ``seed``). Configurations with two atoms
closer than ``sampling.min_distance`` (or non-finite coordinates) are rejected and counted,
not replaced; repeated geometries (same id) are kept once.

Units: Angstrom, eV, Kelvin, femtoseconds, atomic mass units.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pilip import keys, tables
from pilip.errors import PilipError, first_line
from pilip.structures import closest_pair, read_structures, validate_atoms

CALCULATORS = ("GFN2-xTB", "GFN1-xTB", "EMT")
# Modes with |eigenvalue| below this are treated as zero (about 10 cm^-1); see normal_modes().
MODE_TOLERANCE = 4e-4  # eV / (A^2 amu)


@dataclass
class Seed:
    """A system's starting geometry. ``atoms`` positions in Angstrom."""

    name: str
    atoms: Any  # ase.Atoms
    charge: int
    multiplicity: int
    source: str  # ASE molecule name or structure file path


@dataclass
class GeneratorStats:
    """What one generator did for one system."""

    kind: str
    seed: int
    generated: int = 0
    rejected: int = 0  # closer than min_distance, or non-finite coordinates
    duplicates: int = 0
    kept: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


# --- seeds and calculators -------------------------------------------------------------------


def molecule_names() -> set[str]:
    """Names ``ase.build.molecule`` accepts (the G2 set plus ASE's extras)."""
    from ase.build.molecule import extra
    from ase.collections import g2

    return set(g2.names) | set(extra)


def load_seed(
    name: str,
    spec: Mapping[str, Any],
    config_dir: str | os.PathLike = ".",
    min_distance: float | None = None,
) -> Seed:
    """Build and validate the seed of ``systems.<name>``.

    ``spec["seed"]`` is a structure file (relative paths are relative to ``config_dir``; the
    first frame is used) or else an ASE molecule name. Raises PilipError naming the key.
    """
    from pilip.config import check_name

    check_name(name, "systems")
    source = str(spec["seed"])
    charge, multiplicity = int(spec.get("charge", 0)), int(spec.get("multiplicity", 1))
    path = Path(config_dir) / source
    key = f"systems.{name}.seed"
    if path.is_file():
        atoms = read_structures(path, index=0)[0]
        where = f"{path} ({key})"
        if atoms.pbc.any():
            raise PilipError(f"{where}: periodic structure; pilip samples molecules")
    elif source in molecule_names():
        from ase.build import molecule

        atoms = molecule(source)
        where = f"{key} {source!r}"
    else:
        raise PilipError(
            f"{key}: {source!r} is neither an ASE molecule name (H2O, CH3CH2OH, ...) nor a file "
            f"(looked for {path})"
        )
    atoms.pbc = False
    atoms.cell = None
    atoms.calc = None
    validate_atoms(
        atoms, where, min_distance=min_distance, charge=charge, multiplicity=multiplicity
    )
    atoms.info = {"charge": charge, "multiplicity": multiplicity}
    return Seed(name, atoms, charge, multiplicity, source)


def make_calculator(name: str, charge: int, multiplicity: int) -> Any:
    """An ASE calculator for a cheap method: GFN2-xTB / GFN1-xTB (tblite) or EMT (tests)."""
    if name in ("GFN2-xTB", "GFN1-xTB"):
        try:
            from tblite.ase import TBLite
        except ImportError:
            raise PilipError(
                f"calculator {name} needs tblite: pip install tblite (or the pilip[xtb] extra)"
            ) from None
        return TBLite(method=name, charge=charge, multiplicity=multiplicity, verbosity=0)
    if name == "EMT":
        from ase.calculators.emt import EMT

        return EMT()
    raise PilipError(f"unknown calculator {name!r}; use one of {', '.join(CALCULATORS)}")


def generator_seed(seed: int, system: str, index: int, kind: str) -> int:
    """Seed of one generator's random stream: stable under adding other systems/generators."""
    text = f"pilip.sampling:{seed}:{system}:{index}:{kind}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


# --- generators ------------------------------------------------------------------------------
# Each takes (seed, params, rng) and returns a list of (n_atoms, 3) position arrays in Angstrom
# plus notes for the provenance record.


def rattle(seed: Seed, params: Mapping[str, Any], rng: np.random.Generator):
    """Gaussian displacement of every coordinate, standard deviation ``amplitude`` (A)."""
    base = seed.atoms.positions
    amplitude = float(params["amplitude"])
    return [base + rng.normal(0.0, amplitude, base.shape) for _ in range(int(params["n"]))], {}


def finite_difference_hessian(atoms: Any, step: float = 0.005) -> np.ndarray:
    """Hessian (3n, 3n) in eV/A^2 by central differences of the attached calculator's forces.

    ``step`` in Angstrom; 6n force evaluations. The result is symmetrised.
    """
    work = atoms.copy()
    work.calc = atoms.calc
    x0 = atoms.positions.copy()
    n = len(atoms)
    hessian = np.empty((3 * n, 3 * n))
    for column in range(3 * n):
        i, a = divmod(column, 3)
        forces = []
        for sign in (1.0, -1.0):
            displaced = x0.copy()
            displaced[i, a] += sign * step
            work.positions = displaced
            forces.append(work.get_forces().ravel())
        hessian[:, column] = -(forces[0] - forces[1]) / (2.0 * step)
    work.positions = x0
    return 0.5 * (hessian + hessian.T)


def external_basis(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal (3n, k) basis of mass-weighted translations and rotations (k = 5 or 6)."""
    sqrt_m = np.sqrt(masses)
    centre = (masses[:, None] * positions).sum(0) / masses.sum()
    r = positions - centre
    vectors = []
    for axis in np.eye(3):
        vectors.append((sqrt_m[:, None] * axis[None, :]).ravel())
        vectors.append((sqrt_m[:, None] * np.cross(axis[None, :], r)).ravel())
    u, s, _ = np.linalg.svd(np.array(vectors).T, full_matrices=False)
    return u[:, s > 1e-6 * s.max()]  # linear molecules have one rotation fewer


def normal_modes(
    hessian: np.ndarray, positions: np.ndarray, masses: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Vibrational eigenvalues (m,) in eV/(A^2 amu) and mass-weighted modes (3n, m).

    Translations and rotations are projected out exactly, so ``m = 3n - 6`` (``3n - 5`` for
    linear molecules). An eigenvalue of 1 eV/(A^2 amu) is a wavenumber of about 521 cm^-1.
    """
    sqrt_m = np.repeat(np.sqrt(masses), 3)
    weighted = hessian / np.outer(sqrt_m, sqrt_m)
    external = external_basis(positions, masses)
    # orthonormal basis of the vibrational subspace: the complement of the external motions
    full, _ = np.linalg.qr(np.hstack([external, np.eye(len(sqrt_m))]))
    internal = full[:, external.shape[1] :]
    values, vectors = np.linalg.eigh(internal.T @ weighted @ internal)
    return values, internal @ vectors


def harmonic_sample(
    values: np.ndarray,
    modes: np.ndarray,
    masses: np.ndarray,
    temperature: float,
    n: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Cartesian displacements (n, n_atoms, 3) in A from the classical harmonic Boltzmann law.

    Each normal coordinate q_i (A sqrt(amu)) is Gaussian with variance kT / lambda_i, so each
    mode carries kT/2 of potential energy on average (equipartition). ``values`` must be > 0.
    """
    from ase.units import kB

    kt = kB * temperature  # eV
    q = rng.standard_normal((n, len(values))) * np.sqrt(kt / values)
    weighted = q @ modes.T  # (n, 3 n_atoms)
    return weighted.reshape(n, -1, 3) / np.sqrt(masses)[None, :, None]


def normal_mode_sampling(seed: Seed, params: Mapping[str, Any], rng: np.random.Generator):
    """Configurations around the (relaxed) seed, displaced along harmonic normal modes."""
    atoms = seed.atoms.copy()
    atoms.calc = make_calculator(params["calculator"], seed.charge, seed.multiplicity)
    notes: dict[str, Any] = {}
    if params["optimize"]:
        from ase.optimize import BFGS

        optimizer = BFGS(atoms, logfile=None)
        notes["optimized"] = bool(optimizer.run(fmax=float(params["fmax"]), steps=1000))
    hessian = finite_difference_hessian(atoms, float(params["step"]))
    masses = atoms.get_masses()
    values, modes = normal_modes(hessian, atoms.positions, masses)
    real = values > MODE_TOLERANCE
    notes["modes"] = int(real.sum())
    notes["imaginary_modes"] = int((values < -MODE_TOLERANCE).sum())
    if not real.any():
        raise PilipError(
            f"systems.{seed.name}: no vibrational mode with a positive force constant for "
            "normal_modes; use rattle or md for this system"
        )
    displacements = harmonic_sample(
        values[real], modes[:, real], masses, float(params["temperature"]), int(params["n"]), rng
    )
    return [atoms.positions + d for d in displacements], notes


def langevin_md(seed: Seed, params: Mapping[str, Any], rng: np.random.Generator):
    """Frames every ``interval`` steps of Langevin MD after ``equilibration`` steps."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    atoms = seed.atoms.copy()
    atoms.calc = make_calculator(params["calculator"], seed.charge, seed.multiplicity)
    temperature = float(params["temperature"])
    # Maxwell-Boltzmann momenta: each component Gaussian with variance m kT
    kt = units.kB * temperature
    masses = atoms.get_masses()
    atoms.set_momenta(rng.standard_normal((len(atoms), 3)) * np.sqrt(masses * kt)[:, None])
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.set_constraint(FixCom())  # the molecule must not drift away from its seed
    dynamics = Langevin(
        atoms,
        timestep=float(params["timestep"]) * units.fs,
        temperature_K=temperature,
        friction=float(params["friction"]) / units.fs,
        fixcm=False,
        rng=rng,
    )
    frames = []
    try:
        dynamics.run(int(params["equilibration"]))
        for _ in range(int(params["n"])):
            dynamics.run(int(params["interval"]))
            frames.append(atoms.positions.copy())
    except PilipError:
        raise
    except Exception as exc:
        reason = first_line(exc)
        raise PilipError(
            f"systems.{seed.name}: md with {params['calculator']} failed after {len(frames)} "
            f"frames ({reason}); lower sampling temperature or timestep"
        ) from None
    return frames, {}


GENERATORS: dict[str, Callable] = {
    "rattle": rattle,
    "normal_modes": normal_mode_sampling,
    "md": langevin_md,
}


# --- a system's table ------------------------------------------------------------------------


def sample_system(
    config: Mapping[str, Any], system: str, config_dir: str | os.PathLike = "."
) -> tuple[pa.Table, list[GeneratorStats]]:
    """All configurations of one system, from a default-filled config (see pilip.config).

    Returns the configurations table (seed first, then each generator's accepted, new
    configurations in order) and per-generator statistics.
    """
    systems = config["systems"]
    if system not in systems:
        raise PilipError(
            f"--system: {system!r} is not in the config's systems ({', '.join(sorted(systems))})"
        )
    sampling = config["sampling"]
    min_distance = float(sampling["min_distance"])
    seed = load_seed(system, systems[system], config_dir, min_distance)
    seed_table = tables.configurations_from_atoms(
        [seed.atoms],
        system=system,
        generator="seed",
        generator_params={"source": seed.source},
        seed=int(sampling["seed"]),
        charge=seed.charge,
        multiplicity=seed.multiplicity,
    )
    seed_id = seed_table.column(keys.ID)[0].as_py()
    parts = [seed_table]
    seen = {seed_id}
    stats = []
    for index, generator in enumerate(sampling["generators"]):
        kind = generator["kind"]
        stream = generator_seed(int(sampling["seed"]), system, index, kind)
        record = GeneratorStats(kind, stream)
        positions, record.notes = GENERATORS[kind](seed, generator, np.random.default_rng(stream))
        record.generated = len(positions)
        accepted = []
        for p in positions:
            if not np.isfinite(p).all() or closest_pair(p)[2] < min_distance:
                record.rejected += 1
            else:
                accepted.append(p)
        part = tables.configurations_table(
            [seed.atoms.numbers] * len(accepted),
            accepted,
            system=system,
            generator=kind,
            generator_params=json.dumps(dict(generator), sort_keys=True),
            seed=stream,
            parent_id=seed_id,
            charge=seed.charge,
            multiplicity=seed.multiplicity,
        )
        keep = []
        for row, config_id in enumerate(part.column(keys.ID).to_pylist()):
            if config_id in seen:
                record.duplicates += 1
            else:
                seen.add(config_id)
                keep.append(row)
        record.kept = len(keep)
        parts.append(part.take(pa.array(keep, pa.int64())))
        stats.append(record)
    return pa.concat_tables(parts), stats


# --- the cheap level's extra pool ------------------------------------------------------------

EXTRA_POOL_SEED_OFFSET = 1_000_003  # the extra pool's sampling seed: sampling.seed + this


def sample_extra_pool(
    config: Mapping[str, Any], system: str, factor: int, config_dir: str | os.PathLike = "."
) -> tuple[pa.Table, list[GeneratorStats]]:
    """The cheap level's extra pool of one system: the same samplers as ``sample_system``,
    ``factor`` times as many configurations from another seed, without the seed geometry (it
    belongs to the reference set). Cheap labels only: no reference calculation sees them."""
    import copy

    if factor < 1:
        raise PilipError(f"cheap_level.extra_pool = {factor}: must be >= 1 (or disable it)")
    pool = copy.deepcopy(dict(config))
    sampling = pool["sampling"]
    sampling["seed"] = int(sampling["seed"]) + EXTRA_POOL_SEED_OFFSET
    sampling["generators"] = [
        {**generator, "n": int(generator["n"]) * factor} for generator in sampling["generators"]
    ]
    table, stats = sample_system(pool, system, config_dir)
    generators = table.column(keys.GENERATOR).to_pylist()
    keep = [i for i, g in enumerate(generators) if g != "seed"]
    return table.take(pa.array(keep, pa.int64())), stats
