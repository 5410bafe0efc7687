"""Bring structures in from any ASE-readable file, and take tables out as extended XYZ.

Import: energies (eV) and forces (eV/A) are read from each frame's ``info``/``arrays`` or its
single-point results under configurable keys; a file with energies becomes a *dataset* table
(with ``reference`` and ``split`` columns), a file without becomes a *configurations* table
ready for labelling. Every frame is validated first; one bad frame fails the whole import.

Export writes extended XYZ with every float in shortest round-trip form (``repr``), so
export -> import reproduces positions, energies and forces bit for bit, and every column of
the table: how each configuration was made (``generator``, ``generator_params``, ``seed``,
``parent_id``) travels in the comment line's info.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pilip import keys, tables
from pilip.config import SAFE_NAME, check_name
from pilip.errors import PilipError
from pilip.splits import DEFAULT_FRACTIONS, assign_splits
from pilip.structures import (
    DEFAULT_MIN_DISTANCE,
    check_energy,
    check_forces,
    frame_label,
    read_structures,
    validate_atoms,
)


@dataclass
class Imported:
    """Result of :func:`import_structures`: the table, its kind and what happened."""

    table: pa.Table
    kind: str  # "dataset" (energies present) or "configurations"
    n_frames: int  # frames read from the file
    n_duplicates: int  # frames dropped because an earlier frame had the same id


def _lookup(atoms: Any, key: str, per_atom: bool) -> Any:
    """A property from info/arrays, else from the attached single-point results, else None."""
    if key in atoms.info:
        return atoms.info[key]
    if per_atom and key in atoms.arrays:
        return atoms.arrays[key]
    results = getattr(atoms.calc, "results", None) or {}
    return results.get(key)


def _int_info(atoms: Any, key: str, default: int, where: str) -> int:
    value = atoms.info.get(key, default)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise PilipError(f"{where}: {key}={value!r} is not an integer; fix the comment line")
    return int(value)


def _raw_info(path: Path, key: str) -> list[str | None]:
    """The unparsed text of ``key=value`` in each comment line of an extended-XYZ file.

    ASE turns a quoted value such as ``parent_id="0123456789012345"`` into a number; this
    reads the text itself, so an id made only of digits keeps its leading zeros.
    """
    pattern = re.compile(rf'(?:^|\s){re.escape(key)}=("(?:[^"\\]|\\.)*"|\S+)')
    values: list[str | None] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            match = pattern.search(handle.readline())
            text = match.group(1) if match else None
            if text is not None and text.startswith('"'):
                text = re.sub(r"\\(.)", r"\1", text[1:-1])
            values.append(text)
            for _ in range(int(line.split()[0])):
                handle.readline()
    return values


def _provenance_info(
    frames: Sequence[Any], path: Path, default_params: Sequence[str]
) -> tuple[list[str], list[str], list[int], list[str | None]]:
    """generator, generator_params (JSON), seed and parent_id of every frame.

    From the frames' info where pilip's export wrote them, else ``import``, ``default_params``,
    0 and None.
    """
    single = len(frames) == 1
    raw: dict[str, list[str | None]] = {}
    generators, params, seeds, parents = [], [], [], []
    for k, atoms in enumerate(frames):
        where = frame_label(path, None if single else k)
        values = {}
        for key in (keys.GENERATOR, keys.GENERATOR_PARAMS, keys.PARENT_ID):
            value = atoms.info.get(key)
            if value is not None and not isinstance(value, str):
                if key not in raw:  # a string that ASE read as a number: take the text
                    text_file = path.suffix.lower() in (".xyz", ".extxyz")
                    raw[key] = _raw_info(path, key) if text_file else []
                value = raw[key][k] if len(raw[key]) == len(frames) else str(value)
            values[key] = value
        text = values[keys.GENERATOR_PARAMS]
        if text is not None:
            try:
                decoded = json.loads(text)
            except ValueError:
                decoded = None
            if not isinstance(decoded, dict):
                raise PilipError(
                    f"{where}: generator_params={text!r} is not a JSON object; fix or remove it"
                )
            text = json.dumps(decoded, sort_keys=True)
        generators.append(values[keys.GENERATOR] or "import")
        params.append(text if text is not None else default_params[k])
        seeds.append(_int_info(atoms, keys.SEED, 0, where))
        parents.append(values[keys.PARENT_ID])
    return generators, params, seeds, parents


def _common_info(frames: Sequence[Any], key: str) -> Any:
    """The value of ``info[key]`` if every frame has the same one, else None."""
    values = {f.info.get(key) if isinstance(f.info.get(key), str) else None for f in frames}
    return values.pop() if len(values) == 1 else None


def import_structures(
    path: str | os.PathLike,
    *,
    reference: str | None = None,
    energy_key: str = "energy",
    forces_key: str | None = "forces",
    fractions: Sequence[float] | None = None,
    split: str | None = None,
    system: str | None = None,
    charge: int = 0,
    multiplicity: int = 1,
    min_distance: float | None = DEFAULT_MIN_DISTANCE,
    force_validation: bool = False,
    format: str | None = None,
) -> Imported:
    """Read and validate every frame of ``path``; build a dataset or configurations table.

    Charge and multiplicity come from each frame's ``info`` when present, else from the
    arguments. ``system`` defaults to the frames' common ``info["system"]``, else the file name
    stem (made safe). ``reference`` defaults to a common ``info["reference"]``. Splits:
    ``split`` puts every row in one split; else ``fractions`` assigns them from the id hash;
    with neither, splits stored in the file are kept, or (0.8, 0.1, 0.1) is used.
    ``forces_key=None`` ignores forces. Duplicate geometries (same id) keep the first frame.
    """
    path = Path(path)
    if split is not None and split not in keys.SPLITS:
        raise PilipError(f"--split: expected one of {', '.join(keys.SPLITS)}, got {split!r}")
    if reference is not None:
        check_name(reference, "--reference")
    if system is not None:
        check_name(system, "--system")
    frames = read_structures(path, index=":", format=format)
    single = len(frames) == 1

    energies: list[float | None] = []
    forces: list[np.ndarray | None] = []
    charges, mults = [], []
    for k, atoms in enumerate(frames):
        where = frame_label(path, None if single else k)
        if atoms.pbc.any():
            raise PilipError(
                f"{where}: periodic structure (pbc={atoms.pbc.tolist()}); pilip handles molecules, "
                'set pbc="F F F"'
            )
        c = _int_info(atoms, "charge", charge, where)
        m = _int_info(atoms, "multiplicity", multiplicity, where)
        validate_atoms(atoms, where, min_distance=min_distance, charge=c, multiplicity=m)
        charges.append(c)
        mults.append(m)
        energy = _lookup(atoms, energy_key, per_atom=False)
        energies.append(None if energy is None else check_energy(energy, where, energy_key))
        f = _lookup(atoms, forces_key, per_atom=True) if forces_key else None
        forces.append(None if f is None else check_forces(f, len(atoms), where, forces_key))

    labelled = [e is not None for e in energies]
    if any(labelled) and not all(labelled):
        k = labelled.index(False) if labelled[0] else labelled.index(True)
        missing = "no" if labelled[0] else "an"
        raise PilipError(
            f"{frame_label(path, k)}: {missing} {energy_key!r} value unlike frame 0; give every "
            f"frame an energy or none (or choose the key with --energy-key)"
        )

    if system is None:
        stored = _common_info(frames, "system")
        if stored and SAFE_NAME.match(stored):
            system = stored
        else:
            system = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in path.stem)
            system = system if SAFE_NAME.match(system) else f"s_{system}"
    params = [
        json.dumps({"source": path.name, "frame": k}, sort_keys=True) for k in range(len(frames))
    ]
    generators, params, seeds, parents = _provenance_info(frames, path, params)
    table = tables.configurations_from_atoms(
        frames,
        system=system,
        generator=generators,
        generator_params=params,
        seed=seeds,
        parent_id=parents,
        charge=charges,
        multiplicity=mults,
    )
    keep = _first_occurrences(table.column(keys.ID).to_pylist())
    n_duplicates = len(frames) - len(keep)
    if not all(labelled):
        return Imported(
            table.take(pa.array(keep, pa.int64())), "configurations", len(frames), n_duplicates
        )

    if reference is None:
        reference = _common_info(frames, "reference")
        if reference is None:
            raise PilipError(
                f"{path}: the file has energies; name their reference method with --reference NAME"
            )
        check_name(reference, f"{path}: reference")
    ids = table.column(keys.ID).to_pylist()
    if split is not None:
        splits = [split] * len(frames)
    elif fractions is None and all(f.info.get("split") in keys.SPLITS for f in frames):
        splits = [f.info["split"] for f in frames]
    else:
        splits = assign_splits(ids, fractions if fractions is not None else DEFAULT_FRACTIONS)
    validation = [
        force_validation or bool(f.info.get("force_validation", False) is True) for f in frames
    ]
    dataset = tables.dataset_table(
        table,
        energies,
        forces,
        reference=reference,
        split=splits,
        force_validation=validation,
    )
    return Imported(dataset.take(pa.array(keep, pa.int64())), "dataset", len(frames), n_duplicates)


def _first_occurrences(ids: Sequence[str]) -> list[int]:
    seen: set[str] = set()
    keep = []
    for i, config_id in enumerate(ids):
        if config_id not in seen:
            seen.add(config_id)
            keep.append(i)
    return keep


# --- export ----------------------------------------------------------------------------------


def _info_value(value: Any) -> str:
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", value):
        # quoted, with " and \ escaped: ASE's extxyz reader undoes exactly this
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def extxyz_frames(table: pa.Table) -> list[str]:
    """Extended-XYZ text of every row of a configurations or dataset table.

    Floats are written with ``repr`` (17 significant digits at most), so reading them back
    gives the same float64 values. The comment line carries energy (eV), charge,
    multiplicity, system, generator, generator_params, seed, parent_id and, for datasets,
    reference, split and force_validation.
    """
    from ase.data import chemical_symbols

    names = table.column_names
    positions = tables.rows_of(table.column(keys.POSITIONS))
    numbers = table.column(keys.NUMBERS).to_pylist()
    energies = table.column(keys.ENERGY).to_pylist() if keys.ENERGY in names else None
    forces = table.column(keys.FORCES).to_pylist() if keys.FORCES in names else None
    info_columns = [
        c
        for c in (keys.CHARGE, keys.MULTIPLICITY, keys.SYSTEM, keys.GENERATOR,
                  keys.GENERATOR_PARAMS, keys.SEED, keys.PARENT_ID, keys.REFERENCE,
                  keys.SPLIT, keys.FORCE_VALIDATION)
        if c in names
    ]  # fmt: skip
    info = {c: table.column(c).to_pylist() for c in info_columns}
    frames = []
    for i, (z, r) in enumerate(zip(numbers, positions, strict=True)):
        f = None if forces is None or forces[i] is None else np.asarray(forces[i]).reshape(-1, 3)
        properties = "species:S:1:pos:R:3" + (":forces:R:3" if f is not None else "")
        comment = [f"Properties={properties}"]
        if energies is not None and energies[i] is not None:
            comment.append(f"energy={float(energies[i])!r}")
        comment += [
            f"{c}={_info_value(info[c][i])}" for c in info_columns if info[c][i] is not None
        ]
        comment.append('pbc="F F F"')
        lines = [str(len(z)), " ".join(comment)]
        coords = np.asarray(r).tolist()  # Python floats: repr is the shortest exact form
        vectors = f.tolist() if f is not None else None
        for a, (number, xyz) in enumerate(zip(z, coords, strict=True)):
            values = xyz + (vectors[a] if vectors is not None else [])
            lines.append(" ".join([chemical_symbols[number], *(repr(v) for v in values)]))
        frames.append("\n".join(lines) + "\n")
    return frames


def export_table(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write a configurations or dataset table to ``path`` atomically.

    ``.xyz``/``.extxyz`` get the lossless extended XYZ of :func:`extxyz_frames`; any other
    extension goes through ``ase.io.write`` with energies and forces as single-point results.
    """
    from pilip.atomic_io import atomic_path

    path = Path(path)
    if path.suffix.lower() in (".xyz", ".extxyz"):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(extxyz_frames(table))
        return path
    import ase.io

    atoms = tables.atoms_list(table)
    with atomic_path(path) as tmp:
        try:
            ase.io.write(str(tmp), atoms, format=ase.io.formats.filetype(str(path), read=False))
        except (ValueError, KeyError) as exc:
            raise PilipError(f"{path}: cannot write this format ({exc}); use .xyz") from None
    return path
