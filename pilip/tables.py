"""Parquet tables of configurations, labels and datasets: schema, ids, atomic read/write.

Every table pilip writes carries, in its Parquet file metadata, a schema version, its kind
(configurations | labels | dataset), a JSON provenance record and content checksums
(:mod:`pilip.table_checksums`); every field with a physical unit carries it in its field
metadata under ``b"unit"``. Data pages carry CRCs. Reading verifies both, so a damaged file is
a one-line error, never other numbers.

Positions and forces are ``list<fixed_size_list<float64, 3>>``: one list of xyz triples per row.
:func:`positions_to_numpy` views such a column as one flat ``(n_atoms_total, 3)`` float64 array
plus row offsets without copying the coordinates.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pilip import __version__, keys, table_checksums, units
from pilip.atomic_io import atomic_path
from pilip.errors import PilipError, first_line
from pilip.table_checksums import ARROW_SCHEMA, META_CHECKSUMS, checksums

KINDS = ("configurations", "labels", "dataset")

# Positions enter the content hash rounded to this many Angstrom: float noise far below it
# (1e-10 A from arithmetic) keeps the id. Re-rounding near a grid midpoint can still change
# it, which is why pilip's own text export writes every float exactly.
ID_PRECISION = 1e-6  # Angstrom
ID_LENGTH = 16  # hex characters of the sha256 digest

VECTOR3_LIST = pa.list_(pa.list_(pa.float64(), 3))  # per row: (n_atoms, 3)

# Units by column name, applied to any table written through write_table (an explicit unit in
# the field metadata wins, e.g. Hartree component columns of the labels table).
COLUMN_UNITS: dict[str, str] = {
    keys.POSITIONS: units.LENGTH,
    keys.CELL: units.LENGTH,
    keys.ENERGY: units.ENERGY,
    keys.FORCES: units.FORCE,
    keys.WALL_TIME: "s",
}


def _field(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    unit = COLUMN_UNITS.get(name)
    metadata = {keys.META_UNIT: unit.encode()} if unit else None
    return pa.field(name, type_, nullable=nullable, metadata=metadata)


CONFIGURATION_FIELDS: tuple[pa.Field, ...] = (
    _field(keys.ID, pa.string(), nullable=False),
    _field(keys.NUMBERS, pa.list_(pa.int32()), nullable=False),
    _field(keys.POSITIONS, VECTOR3_LIST, nullable=False),
    _field(keys.CHARGE, pa.int32(), nullable=False),
    _field(keys.MULTIPLICITY, pa.int32(), nullable=False),
    _field(keys.SYSTEM, pa.string(), nullable=False),
    _field(keys.GENERATOR, pa.string(), nullable=False),
    _field(keys.GENERATOR_PARAMS, pa.string(), nullable=False),
    _field(keys.SEED, pa.int64(), nullable=False),
    _field(keys.PARENT_ID, pa.string()),
)
LABEL_FIELDS: tuple[pa.Field, ...] = (
    _field(keys.ENERGY, pa.float64()),
    _field(keys.FORCES, VECTOR3_LIST),
    _field(keys.REFERENCE, pa.string(), nullable=False),
    _field(keys.SPLIT, pa.string(), nullable=False),
    _field(keys.FORCE_VALIDATION, pa.bool_(), nullable=False),
)
CONFIGURATION_SCHEMA = pa.schema(CONFIGURATION_FIELDS)
DATASET_SCHEMA = pa.schema(CONFIGURATION_FIELDS + LABEL_FIELDS)


# --- ids -------------------------------------------------------------------------------------


def configuration_id(
    numbers: np.ndarray, positions: np.ndarray, charge: int = 0, multiplicity: int = 1
) -> str:
    """Content hash of a configuration: 16 hex characters of a sha256.

    Hashes the atomic numbers (n_atoms,), the positions (n_atoms, 3) in Angstrom rounded to
    ``ID_PRECISION`` (1e-6 A), the charge and the multiplicity. Atom order matters.
    """
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(numbers) != len(positions):
        raise ValueError(f"{len(numbers)} atomic numbers but {len(positions)} positions")
    grid = np.rint(positions / ID_PRECISION).astype("<i8")
    digest = hashlib.sha256()
    digest.update(np.asarray(numbers, dtype="<i4").tobytes())
    digest.update(grid.tobytes())
    digest.update(np.asarray([charge, multiplicity], dtype="<i4").tobytes())
    return digest.hexdigest()[:ID_LENGTH]


# --- positions <-> numpy ---------------------------------------------------------------------


def positions_to_numpy(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """View a ``list<fixed_size_list<float64,3>>`` column as flat coordinates plus offsets.

    Returns ``(flat, offsets)``: ``flat`` float64 (n_atoms_total, 3) and ``offsets`` int64
    (n_rows + 1,), so row ``i`` is ``flat[offsets[i]:offsets[i+1]]``. ``flat`` shares memory
    with the Arrow buffer (read-only) when the column is one chunk; a column of several chunks
    is first combined (one copy). Works for positions (Angstrom) and forces (eV/A) alike; the
    column must not contain null rows.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if not pa.types.is_list(column.type) or column.type != VECTOR3_LIST:
        raise TypeError(f"expected {VECTOR3_LIST}, got {column.type}")
    if column.null_count:
        raise ValueError(f"{column.null_count} null rows: select non-null rows first")
    offsets = column.offsets.to_numpy().astype(np.int64)
    triples = column.values  # ignores the list array's own slice offset, as offsets do
    start = triples.offset * 3  # a sliced fixed-size-list child starts inside its buffer
    floats = triples.values.to_numpy(zero_copy_only=True)
    first, last = int(offsets[0]), int(offsets[-1])
    flat = floats[start + 3 * first : start + 3 * last].reshape(-1, 3)
    return flat, offsets - first


def numpy_to_positions(flat: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
    """Inverse of :func:`positions_to_numpy`: (n_atoms_total, 3) + offsets -> list column."""
    flat = np.ascontiguousarray(flat, dtype=np.float64).reshape(-1, 3)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must rise from 0 to the number of atoms")
    triples = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), 3)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), triples)


def vectors_to_arrow(rows: Sequence[np.ndarray | None]) -> pa.ListArray:
    """Per-row (n_atoms, 3) arrays, or None for a null row, -> ``list<fixed_size_list<f8,3>>``."""
    lengths = [0 if r is None else len(r) for r in rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    present = [np.asarray(r, dtype=np.float64).reshape(-1, 3) for r in rows if r is not None]
    flat = np.concatenate(present) if present else np.zeros((0, 3))
    column = numpy_to_positions(flat, offsets)
    if all(r is not None for r in rows):
        return column
    mask = pa.array([r is None for r in rows])
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), column.values, mask=mask, type=VECTOR3_LIST
    )


def rows_of(column: pa.Array | pa.ChunkedArray) -> list[np.ndarray]:
    """Split a vector column into per-row (n_atoms, 3) views (no copies of the coordinates)."""
    flat, offsets = positions_to_numpy(column)
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


# --- building tables -------------------------------------------------------------------------


def _per_row(value: Any, n: int, name: str) -> list:
    """Broadcast a scalar to ``n`` rows, or check that a sequence has ``n`` entries."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{name}: {len(value)} values for {n} configurations")
    return list(value)


def configurations_table(
    numbers: Sequence[np.ndarray],
    positions: Sequence[np.ndarray],
    *,
    system: str | Sequence[str],
    generator: str | Sequence[str],
    generator_params: Mapping | str | Sequence[Mapping | str] = "{}",
    seed: int | Sequence[int] = 0,
    parent_id: str | None | Sequence[str | None] = None,
    charge: int | Sequence[int] = 0,
    multiplicity: int | Sequence[int] = 1,
) -> pa.Table:
    """Build a configurations table; ids are computed here from the content.

    ``numbers[i]`` is (n_atoms_i,) atomic numbers, ``positions[i]`` (n_atoms_i, 3) in Angstrom.
    Every other argument is one value for all rows or one per row. ``generator_params`` is a
    mapping (stored as sorted JSON) or a JSON string.
    """
    n = len(numbers)
    if len(positions) != n:
        raise ValueError(f"{n} sets of atomic numbers but {len(positions)} sets of positions")
    charges = [int(c) for c in _per_row(charge, n, "charge")]
    mults = [int(m) for m in _per_row(multiplicity, n, "multiplicity")]
    params = [
        p if isinstance(p, str) else json.dumps(p, sort_keys=True)
        for p in _per_row(generator_params, n, "generator_params")
    ]
    pos = [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in positions]
    ids = [
        configuration_id(z, p, c, m)
        for z, p, c, m in zip(numbers, pos, charges, mults, strict=True)
    ]
    columns = {
        keys.ID: pa.array(ids, pa.string()),
        keys.NUMBERS: pa.array(
            [np.asarray(z, dtype=np.int32) for z in numbers], pa.list_(pa.int32())
        ),
        keys.POSITIONS: vectors_to_arrow(pos),
        keys.CHARGE: pa.array(charges, pa.int32()),
        keys.MULTIPLICITY: pa.array(mults, pa.int32()),
        keys.SYSTEM: pa.array(_per_row(system, n, "system"), pa.string()),
        keys.GENERATOR: pa.array(_per_row(generator, n, "generator"), pa.string()),
        keys.GENERATOR_PARAMS: pa.array(params, pa.string()),
        keys.SEED: pa.array([int(s) for s in _per_row(seed, n, "seed")], pa.int64()),
        keys.PARENT_ID: pa.array(_per_row(parent_id, n, "parent_id"), pa.string()),
    }
    return pa.Table.from_pydict(columns, schema=CONFIGURATION_SCHEMA)


def configurations_from_atoms(
    atoms: Sequence[Any],
    *,
    system: str | Sequence[str],
    generator: str | Sequence[str],
    generator_params: Mapping | str | Sequence[Mapping | str] = "{}",
    seed: int | Sequence[int] = 0,
    parent_id: str | None | Sequence[str | None] = None,
    charge: int | Sequence[int] | None = None,
    multiplicity: int | Sequence[int] | None = None,
) -> pa.Table:
    """Configurations table from ASE ``Atoms`` (positions in Angstrom).

    ``charge``/``multiplicity`` default to ``atoms.info["charge"]`` / ``["multiplicity"]``
    of each structure, else 0 and 1.
    """
    if charge is None:
        charge = [int(a.info.get("charge", 0)) for a in atoms]
    if multiplicity is None:
        multiplicity = [int(a.info.get("multiplicity", 1)) for a in atoms]
    return configurations_table(
        [a.numbers for a in atoms],
        [a.positions for a in atoms],
        system=system,
        generator=generator,
        generator_params=generator_params,
        seed=seed,
        parent_id=parent_id,
        charge=charge,
        multiplicity=multiplicity,
    )


def dataset_table(
    configurations: pa.Table,
    energy: Sequence[float | None],
    forces: Sequence[np.ndarray | None],
    *,
    reference: str | Sequence[str],
    split: str | Sequence[str],
    force_validation: bool | Sequence[bool] = False,
) -> pa.Table:
    """Append labels to a configurations table: energy (eV), forces (n_atoms, 3) eV/A or None."""
    n = configurations.num_rows
    columns = {f.name: configurations.column(f.name) for f in CONFIGURATION_FIELDS}
    columns[keys.ENERGY] = pa.array(_per_row(energy, n, "energy"), pa.float64())
    columns[keys.FORCES] = vectors_to_arrow(_per_row(forces, n, "forces"))
    columns[keys.REFERENCE] = pa.array(_per_row(reference, n, "reference"), pa.string())
    columns[keys.SPLIT] = pa.array(_per_row(split, n, "split"), pa.string())
    columns[keys.FORCE_VALIDATION] = pa.array(
        [bool(v) for v in _per_row(force_validation, n, "force_validation")], pa.bool_()
    )
    return pa.Table.from_pydict(columns, schema=DATASET_SCHEMA)


def atoms_list(table: pa.Table) -> list[Any]:
    """ASE ``Atoms`` for every row; energy/forces (eV, eV/A) attached as a single-point result.

    ``info`` carries id, charge, multiplicity, system and, for datasets, reference and split.
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    positions = rows_of(table.column(keys.POSITIONS))
    numbers = table.column(keys.NUMBERS).to_pylist()
    names = table.column_names
    info_columns = [
        c for c in (keys.ID, keys.CHARGE, keys.MULTIPLICITY, keys.SYSTEM, keys.REFERENCE,
                    keys.SPLIT) if c in names
    ]  # fmt: skip
    info_values = {c: table.column(c).to_pylist() for c in info_columns}
    energies = table.column(keys.ENERGY).to_pylist() if keys.ENERGY in names else None
    forces = None
    if keys.FORCES in names:
        column = table.column(keys.FORCES)
        forces = [None if v is None else np.asarray(v) for v in column.to_pylist()]
    result = []
    for i, (z, r) in enumerate(zip(numbers, positions, strict=True)):
        atoms = Atoms(numbers=z, positions=np.array(r))
        atoms.info.update({c: info_values[c][i] for c in info_columns})
        results = {}
        if energies is not None and energies[i] is not None:
            results["energy"] = energies[i]
        if forces is not None and forces[i] is not None:
            results["forces"] = forces[i].reshape(-1, 3)
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        result.append(atoms)
    return result


# --- reading and writing ---------------------------------------------------------------------


def with_units(table: pa.Table) -> pa.Table:
    """Add ``COLUMN_UNITS`` to the field metadata of known columns that have no unit yet."""
    fields = []
    for field in table.schema:
        metadata = dict(field.metadata or {})
        unit = COLUMN_UNITS.get(field.name)
        if unit and keys.META_UNIT not in metadata:
            metadata[keys.META_UNIT] = unit.encode()
        fields.append(field.with_metadata(metadata) if metadata else field)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def write_table(
    table: pa.Table, path: str | os.PathLike, kind: str, provenance: Mapping[str, Any]
) -> Path:
    """Write ``table`` to Parquet atomically with units, schema version, kind and provenance.

    ``provenance`` is any JSON-serialisable mapping (config hash, command, parameters);
    ``pilip_version`` and ``created`` (UTC, ISO 8601) are added when absent.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    record = {
        "pilip_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(provenance)
    metadata = dict(table.schema.metadata or {})
    metadata[keys.META_SCHEMA_VERSION] = keys.SCHEMA_VERSION.encode()
    metadata[keys.META_KIND] = kind.encode()
    metadata[keys.META_PROVENANCE] = json.dumps(record, sort_keys=True, default=str).encode()
    table = with_units(table).replace_schema_metadata(metadata)
    metadata[META_CHECKSUMS] = checksums(table)
    table = table.replace_schema_metadata(metadata)
    path = Path(path)
    with atomic_path(path) as tmp:
        # a CRC per data page: a damaged page is an error on reading, never other numbers
        pq.write_table(table, tmp, write_page_checksum=True)
    return path


def read_schema(path: str | os.PathLike, kind: str | Sequence[str] | None = None) -> pa.Schema:
    """The schema of a table written by :func:`write_table`, without reading its rows; its
    schema version and kind checked as in :func:`read_table`."""
    path = Path(path)
    if not path.is_file():
        raise PilipError(f"{path}: no such file")
    try:
        schema = pq.read_schema(path)
        _verified_record(schema)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _damaged(path, exc) from None
    _check_metadata(path, schema, kind)
    return schema.with_metadata(_without(schema.metadata, META_CHECKSUMS))


def read_parquet(
    path: str | os.PathLike,
    columns: Sequence[str] | None = None,
    filters: Any = None,
) -> pa.Table:
    """``pq.read_table(path, columns=..., filters=...)`` with every checksum verified.

    Page CRCs are checked while decoding; then the content checksums (:mod:`
    pilip.table_checksums`) of the schema and of every column read. With ``filters`` (the
    ``pq.read_table`` form) the columns are read and verified whole, and the rows filtered
    here: the rows left out never leave this function. A truncated or damaged file raises
    PilipError naming the file and what to do. Files written before checksums existed are
    read unverified.
    """
    try:
        source = pq.ParquetFile(path, page_checksum_verification=True)
        schema = source.schema_arrow
        wanted = list(schema.names if columns is None else columns)
        expression = pq.filters_to_expression(filters) if filters is not None else None
        needed = wanted + [name for name in _filter_columns(filters) if name not in wanted]
        record = _verified_record(schema)  # a damaged field name is damage, not a missing column
        missing = [name for name in needed if name not in schema.names]
        if not missing:
            table = source.read(columns=needed)
            _verify_columns(record, schema, table, needed)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _damaged(path, exc) from None
    if missing:
        raise PilipError(
            f"{path}: no column {missing[0]!r} (it has {', '.join(schema.names)}); is it the "
            "table this command reads?"
        )
    if expression is not None:
        table = table.filter(expression).select(wanted)
    # the checksums belong to the file, not to the table: a table changed and written by
    # other means must not carry checksums of what it was
    return table.replace_schema_metadata(_without(table.schema.metadata, META_CHECKSUMS))


def _filter_columns(filters: Any) -> list[str]:
    """Column names in ``pq.read_table``'s list form of filters (flat or lists of lists)."""
    if filters is None:
        return []
    if isinstance(filters, list) and filters and isinstance(filters[0], list):
        return [name for group in filters for name, _op, _value in group]
    return [name for name, _op, _value in filters]


def _verified_record(schema: pa.Schema) -> dict[str, str] | None:
    """The checksums recorded in ``schema`` (None for a file from before checksums), after
    checking the schema and metadata against them; ValueError when they disagree."""
    try:
        record = table_checksums.recorded(schema)
        if record is None or table_checksums.schema_matches(record, schema):
            return record
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable schema or checksums: {first_line(exc)}") from None
    raise _mismatch(["the schema or metadata"])


def _verify_columns(
    record: dict[str, str] | None, schema: pa.Schema, table: pa.Table, columns: Sequence[str]
) -> None:
    """ValueError when ``table``'s ``columns`` disagree with ``record``, or when the table's
    copy of the file metadata differs from ``schema``'s (the one the record was checked on)."""
    if record is None:
        return
    bad = table_checksums.mismatched_columns(record, table, columns)
    if _without(table.schema.metadata, ARROW_SCHEMA) != _without(schema.metadata, ARROW_SCHEMA):
        bad.append("the file metadata (its two copies differ)")
    if bad:
        raise _mismatch(bad)


def _mismatch(bad: list[str]) -> ValueError:
    return ValueError(
        f"its checksums do not match {', '.join(bad)}: damaged, or changed by another program"
    )


def _without(metadata: Mapping[bytes, bytes] | None, key: bytes) -> dict[bytes, bytes]:
    return {k: v for k, v in (metadata or {}).items() if k != key}


def _damaged(path: str | os.PathLike, exc: BaseException) -> PilipError:
    return PilipError(
        f"{path}: not a readable Parquet file ({first_line(exc)}); the file is damaged or not "
        "Parquet: re-create it with the pilip command that wrote it"
    )


def read_table(path: str | os.PathLike, kind: str | Sequence[str] | None = None) -> pa.Table:
    """Read a table written by :func:`write_table`; check its schema version and kind.

    Raises PilipError (one line, naming the file) for a missing or unreadable file, a Parquet
    file pilip did not write, another schema version, or a kind not in ``kind``.
    """
    path = Path(path)
    if not path.is_file():
        raise PilipError(f"{path}: no such file")
    table = read_parquet(path)
    _check_metadata(path, table.schema, kind)
    return table


def _check_metadata(path: Path, schema: pa.Schema, kind: str | Sequence[str] | None) -> None:
    metadata = schema.metadata or {}
    version = metadata.get(keys.META_SCHEMA_VERSION)
    if version is None:
        raise PilipError(
            f"{path}: not a pilip table (no {keys.META_SCHEMA_VERSION.decode()} metadata)"
        )
    if version.decode() != keys.SCHEMA_VERSION:
        raise PilipError(
            f"{path}: schema version {version.decode()}, this pilip reads "
            f"{keys.SCHEMA_VERSION}; re-create the file with this version"
        )
    if kind is not None:
        wanted = (kind,) if isinstance(kind, str) else tuple(kind)
        found = metadata.get(keys.META_KIND, b"").decode()
        if found not in wanted:
            raise PilipError(f"{path}: a {found} table, expected {' or '.join(wanted)}")


def table_kind(table: pa.Table) -> str:
    """The kind recorded in a table's file metadata (configurations | labels | dataset)."""
    return (table.schema.metadata or {}).get(keys.META_KIND, b"").decode()


def table_provenance(table: pa.Table) -> dict[str, Any]:
    """The provenance record of a table read by :func:`read_table` (empty if none)."""
    raw = (table.schema.metadata or {}).get(keys.META_PROVENANCE)
    return json.loads(raw) if raw else {}


def field_unit(table: pa.Table, column: str) -> str | None:
    """The unit stored in a column's field metadata, or None."""
    metadata = table.schema.field(column).metadata or {}
    unit = metadata.get(keys.META_UNIT)
    return unit.decode() if unit is not None else None
