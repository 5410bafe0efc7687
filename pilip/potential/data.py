"""Dataset tables -> molecules held in memory as tensors -> batches for the models.

A :class:`Structures` keeps every atom of every structure in one concatenated tensor
(positions in Angstrom, energies in eV, forces in eV/A) plus per-structure offsets, so a batch
is a cheap gather on whatever device the tensors live on (no per-molecule Python objects).

Force labels are a privilege, not a default: :func:`load_dataset` reads no forces unless
asked, and never returns forces of rows flagged ``force_validation`` (those are reserved for
evaluation). Rows flagged ``force_validation`` are left out of training and validation
altogether, so neither their forces nor their energies can steer training or model selection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pilip import keys, tables
from pilip.errors import PilipError
from pilip.rows import FIT, SELECT, RowFlags, stage_rows
from pilip.tables import read_schema

TRAIN, VAL, TEST = keys.SPLITS


@dataclass
class Structures:
    """A set of structures as concatenated tensors (all on one device)."""

    numbers: torch.Tensor  # (n_atoms_total,) long
    positions: torch.Tensor  # (n_atoms_total, 3) Angstrom
    offsets: torch.Tensor  # (n_structures + 1,) long, atoms of structure i: offsets[i]:offsets[i+1]
    energy: torch.Tensor | None = None  # (n_structures,) eV, None for unlabelled structures
    forces: torch.Tensor | None = None  # (n_atoms_total, 3) eV/A, None unless asked for
    # (n_structures,) weight of each energy label in the energy loss (None: 1 for every one)
    energy_weight: torch.Tensor | None = None
    # (n_structures,) 1 where a structure's forces are trained on, 0 where it has none (None: 1)
    force_weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    @property
    def n_atoms(self) -> torch.Tensor:
        """Atoms per structure, (n_structures,) long."""
        return self.offsets[1:] - self.offsets[:-1]

    def elements(self) -> list[int]:
        """Sorted atomic numbers present."""
        return sorted(int(z) for z in torch.unique(self.numbers).tolist())

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Structures:
        """Copy to ``device``; ``dtype`` (float32/float64) applies to positions, energy, forces."""
        dtype = dtype or self.positions.dtype

        def move(t: torch.Tensor | None, floating: bool) -> torch.Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype) if floating else t.to(device=device)

        return Structures(
            numbers=move(self.numbers, False),
            positions=move(self.positions, True),
            offsets=move(self.offsets, False),
            energy=move(self.energy, True),
            forces=move(self.forces, True),
            energy_weight=move(self.energy_weight, True),
            force_weight=move(self.force_weight, True),
        )

    def _atom_index(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Atom indices of the structures in ``index`` (in order), their batch vector, counts."""
        counts = self.n_atoms[index]
        batch = torch.repeat_interleave(torch.arange(len(index), device=counts.device), counts)
        first_in_batch = torch.cumsum(counts, 0) - counts
        local = torch.arange(batch.shape[0], device=counts.device) - first_in_batch[batch]
        return self.offsets[index][batch] + local, batch, counts

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> Structures:
        """The structures at ``index`` (in that order) as a new :class:`Structures`."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.offsets.device)
        atoms, _, counts = self._atom_index(index)
        offsets = torch.zeros(len(index) + 1, dtype=torch.long, device=counts.device)
        offsets[1:] = torch.cumsum(counts, 0)
        return Structures(
            numbers=self.numbers[atoms],
            positions=self.positions[atoms],
            offsets=offsets,
            energy=None if self.energy is None else self.energy[index],
            forces=None if self.forces is None else self.forces[atoms],
            energy_weight=None if self.energy_weight is None else self.energy_weight[index],
            force_weight=None if self.force_weight is None else self.force_weight[index],
        )

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch dict (pilip.keys names) of the structures at ``index``."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.offsets.device)
        atoms, batch, counts = self._atom_index(index)
        out = {
            keys.NUMBERS: self.numbers[atoms],
            keys.POSITIONS: self.positions[atoms],
            keys.BATCH: batch,
            keys.N_ATOMS: counts,
        }
        if self.energy is not None:
            out[keys.ENERGY] = self.energy[index]
        if self.forces is not None:
            out[keys.FORCES] = self.forces[atoms]
        if self.energy_weight is not None:
            out[keys.ENERGY_WEIGHT] = self.energy_weight[index]
        if self.force_weight is not None and self.forces is not None:
            out[keys.FORCE_WEIGHT] = self.force_weight[index]
        return out

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches covering every structure once (a random order when ``shuffle``).

        The permutation is drawn on the CPU from ``generator`` so that the order depends on the
        seed only, never on the device.
        """
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(self.offsets.device)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])


# --- reading Parquet -------------------------------------------------------------------------


def _column_numbers_positions(
    table: pa.Table, path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numbers (n_atoms_total,) int64, offsets (n+1,) int64, positions (n_atoms_total, 3) A."""
    for name in (keys.NUMBERS, keys.POSITIONS):
        if table.column(name).null_count:
            raise PilipError(f"{path}: column '{name}' has null rows; every row needs it")
    numbers_col = table.column(keys.NUMBERS).combine_chunks()
    positions_col = table.column(keys.POSITIONS).combine_chunks()
    counts = pc.list_value_length(numbers_col).to_numpy(zero_copy_only=False).astype(np.int64)
    counts_pos = pc.list_value_length(positions_col).to_numpy(zero_copy_only=False)
    if not np.array_equal(counts, counts_pos):
        bad = int(np.flatnonzero(counts != counts_pos)[0])
        raise PilipError(
            f"{path}: row {bad} has {counts[bad]} atomic numbers but {counts_pos[bad]} positions"
        )
    numbers = pc.list_flatten(numbers_col).to_numpy(zero_copy_only=False).astype(np.int64)
    positions = pc.list_flatten(pc.list_flatten(positions_col)).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return numbers, offsets, np.asarray(positions, dtype=np.float64).reshape(-1, 3)


def _structures(
    numbers: np.ndarray, offsets: np.ndarray, positions: np.ndarray, energy: np.ndarray | None
) -> Structures:
    # torch.tensor copies: Arrow-backed arrays may be read-only
    return Structures(
        numbers=torch.tensor(numbers),
        positions=torch.tensor(positions),
        offsets=torch.tensor(offsets),
        energy=None if energy is None else torch.tensor(energy),
    )


def _schema_names(path: Path, kinds: tuple[str, ...]) -> list[str]:
    """Column names of a pilip table of one of ``kinds`` (version and kind checked)."""
    if not path.is_file():
        raise PilipError(f"{path}: no such file; pass a dataset Parquet table (pilip collect)")
    return read_schema(path, kinds).names


def _row_flags(table: pa.Table, path: Path) -> RowFlags:
    split = np.asarray(table.column(keys.SPLIT).to_pylist(), dtype=object)
    unknown = sorted({str(s) for s in split} - set(keys.SPLITS))
    if unknown:
        raise PilipError(
            f"{path}: column 'split' has value(s) {unknown}; allowed: {', '.join(keys.SPLITS)}"
        )
    if keys.FORCE_VALIDATION in table.column_names:
        column = table.column(keys.FORCE_VALIDATION).fill_null(False)
        fv = np.asarray(column.to_numpy(zero_copy_only=False), dtype=bool)
    else:
        fv = np.zeros(len(split), dtype=bool)
    return RowFlags(split=split, force_validation=fv)


def training_references(path: str | Path) -> list[str]:
    """Sorted reference names of a dataset's training (``rows.FIT``) energies."""
    path = Path(path)
    names = _schema_names(path, ("dataset",))
    if keys.REFERENCE not in names:
        return []
    columns = [keys.SPLIT, keys.REFERENCE] + (
        [keys.FORCE_VALIDATION] if keys.FORCE_VALIDATION in names else []
    )
    table = tables.read_parquet(path, columns=columns)
    rows = stage_rows(FIT, _row_flags(table, path))
    reference = table.column(keys.REFERENCE).to_pylist()
    return sorted({str(reference[i]) for i in rows if reference[i] is not None})


def subsample_indices(n_available: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` of ``n_available`` rows, chosen by ``seed``.

    Nested by construction: for one seed, the rows chosen for a smaller ``n`` are a subset of
    those for a larger ``n`` (so learning curves add data rather than swap it).
    """
    if n is None or n == n_available:
        return np.arange(n_available)
    if n < 1 or n > n_available:
        raise PilipError(
            f"--n-train {n}: the training split has {n_available} structures; "
            f"choose 1..{n_available}"
        )
    order = np.random.default_rng(seed).permutation(n_available)
    return np.sort(order[:n])


def load_dataset(
    path: str | Path,
    *,
    forces: bool = False,
    n_train: int | None = None,
    seed: int = 0,
) -> dict[str, Structures]:
    """Read a dataset table into ``{"train": ..., "val": ...}`` Structures (float64, CPU): the
    rows :func:`pilip.rows.stage_rows` gives the ``FIT`` and ``SELECT`` stages.

    Rows flagged ``force_validation`` are excluded from every split returned here. Forces are
    read only when ``forces`` is true: those of the training split (a training row without
    forces is then an error) and those of the validation split when every validation row has
    them (else the validation split has none: model selection then looks at energies only).
    ``n_train`` subsamples the training split (see :func:`subsample_indices`). Energies must
    be present on every returned row.
    """
    path = Path(path)
    names = _schema_names(path, ("dataset",))
    required = [keys.NUMBERS, keys.POSITIONS, keys.ENERGY, keys.SPLIT]
    missing = [c for c in required if c not in names]
    if missing:
        raise PilipError(
            f"{path}: missing column(s) {', '.join(missing)}; a dataset table from "
            "`pilip collect` has them"
        )
    columns = required + ([keys.FORCE_VALIDATION] if keys.FORCE_VALIDATION in names else [])
    # The forces column is deliberately absent from this read.
    table = tables.read_parquet(path, columns=columns)
    flags = _row_flags(table, path)
    numbers, offsets, positions = _column_numbers_positions(table, path)
    all_structures = _structures(numbers, offsets, positions, None)
    energy_col = table.column(keys.ENERGY)

    out: dict[str, Structures] = {}
    for name, stage in ((TRAIN, FIT), (VAL, SELECT)):
        rows = stage_rows(stage, flags)
        if name == TRAIN:
            if len(rows) == 0:
                raise PilipError(
                    f"{path}: no rows with split 'train' (force_validation rows aside)"
                )
            rows = rows[subsample_indices(len(rows), n_train, seed)]
        if name == VAL and len(rows) == 0:
            raise PilipError(
                f"{path}: no rows with split 'val'; model selection needs validation energies"
            )
        energy = energy_col.take(pa.array(rows)).to_numpy(zero_copy_only=False)
        if np.isnan(np.asarray(energy, dtype=np.float64)).any():
            raise PilipError(f"{path}: split '{name}' has rows without an energy; re-run collect")
        s = all_structures.subset(rows)
        out[name] = replace(s, energy=torch.tensor(np.asarray(energy, dtype=np.float64)))
        if forces:
            out[name] = replace(out[name], forces=_split_forces(path, names, flags, rows, s, name))
    return out


def _split_forces(
    path: Path, names: list[str], flags: RowFlags, rows: np.ndarray, s: Structures, split: str
) -> torch.Tensor | None:
    """Forces (n_atoms_total, 3) of the rows ``rows`` of ``split`` (train or val), read with
    a row filter; None for the validation split when a row of it has no forces.

    The filter (split == ``split`` and not force_validation) is applied inside the reader
    (``tables.read_parquet``, after verifying the column's checksum), so force-validation
    forces never reach this process's tables.
    """
    if keys.FORCES not in names:
        if split == VAL:
            return None
        raise PilipError(f"{path}: no 'forces' column; drop 'force' from --losses")
    filters = [(keys.SPLIT, "=", split)]
    if keys.FORCE_VALIDATION in names:
        filters.append((keys.FORCE_VALIDATION, "=", False))
    table = tables.read_parquet(path, columns=[keys.FORCES], filters=filters)
    # The filtered rows come in file order: map them to positions among split & ~fv rows.
    eligible = stage_rows(FIT if split == TRAIN else SELECT, flags)
    if table.num_rows != len(eligible):
        raise PilipError(f"{path}: force_validation has nulls among {split} rows; fix collect")
    taken = table.column(keys.FORCES).take(pa.array(np.searchsorted(eligible, rows)))
    if taken.null_count and split == VAL:
        return None
    if taken.null_count:
        raise PilipError(
            f"{path}: {taken.null_count} training row(s) have no forces; "
            "drop 'force' from --losses or label them with forces"
        )
    flat = pc.list_flatten(pc.list_flatten(taken.combine_chunks())).to_numpy(zero_copy_only=False)
    flat = np.asarray(flat, dtype=np.float64).reshape(-1, 3)
    if flat.shape[0] != int(s.offsets[-1]):
        raise PilipError(f"{path}: forces and positions disagree in atom count; fix the table")
    return torch.tensor(flat)


def load_unlabelled(path: str | Path) -> Structures:
    """Configurations for the weak losses only: numbers and positions, never labels.

    Accepts a configurations table or any table with ``numbers`` and ``positions`` columns;
    an ``energy`` or ``forces`` column, if present, is not read.
    """
    path = Path(path)
    names = _schema_names(path, ("configurations", "dataset"))
    missing = [c for c in (keys.NUMBERS, keys.POSITIONS) if c not in names]
    if missing:
        raise PilipError(f"{path}: missing column(s) {', '.join(missing)} for --unlabelled")
    table = tables.read_parquet(path, columns=[keys.NUMBERS, keys.POSITIONS])
    if table.num_rows == 0:
        raise PilipError(f"{path}: --unlabelled table has no rows")
    numbers, offsets, positions = _column_numbers_positions(table, path)
    return _structures(numbers, offsets, positions, None)


def structures_from_arrays(
    numbers: list[np.ndarray],
    positions: list[np.ndarray],
    energy: np.ndarray | None = None,
    forces: list[np.ndarray] | None = None,
) -> Structures:
    """Build :class:`Structures` from per-structure arrays (Angstrom, eV, eV/A)."""
    counts = np.array([len(z) for z in numbers], dtype=np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Structures(
        numbers=torch.from_numpy(np.concatenate(numbers).astype(np.int64)),
        positions=torch.from_numpy(np.concatenate(positions).astype(np.float64).reshape(-1, 3)),
        offsets=torch.from_numpy(offsets),
        energy=None if energy is None else torch.as_tensor(energy, dtype=torch.float64),
        forces=None
        if forces is None
        else torch.from_numpy(np.concatenate(forces).astype(np.float64).reshape(-1, 3)),
    )


def concat_structures(parts: list[Structures]) -> Structures:
    """One :class:`Structures` of ``parts`` in order (same device and dtype). Labels and
    weights are kept where every part has them; energy and force weights of a part without
    them are 1."""
    offsets, start = [parts[0].offsets[:1]], 0
    for s in parts:
        offsets.append(s.offsets[1:] + start)
        start += int(s.offsets[-1])

    def joined(name: str, fill: float | None = None) -> torch.Tensor | None:
        values = [getattr(s, name) for s in parts]
        if fill is not None:
            if all(v is None for v in values):
                return None
            values = [
                torch.full((len(s),), fill, dtype=parts[0].positions.dtype) if v is None else v
                for s, v in zip(parts, values, strict=True)
            ]
        return None if any(v is None for v in values) else torch.cat(values)

    return Structures(
        numbers=joined("numbers"),
        positions=joined("positions"),
        offsets=torch.cat(offsets),
        energy=joined("energy"),
        forces=joined("forces"),
        energy_weight=joined("energy_weight", 1.0),
        force_weight=joined("force_weight", 1.0),
    )


def concat_batches(
    labelled: dict[str, torch.Tensor], unlabelled: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One batch of labelled structures followed by unlabelled ones (weak losses only).

    ``keys.ENERGY_WEIGHT`` (and ``keys.FORCE_WEIGHT`` when forces are present) is the labelled
    structures' own (1 where the batch has none) and 0 for the unlabelled structures, whose
    label slots hold zeros.
    """
    n_lab = labelled[keys.N_ATOMS].shape[0]
    n_unl = unlabelled[keys.N_ATOMS].shape[0]
    out = {
        key: torch.cat([labelled[key], unlabelled[key]])
        for key in (keys.NUMBERS, keys.POSITIONS, keys.N_ATOMS)
    }
    out[keys.BATCH] = torch.cat([labelled[keys.BATCH], unlabelled[keys.BATCH] + n_lab])
    energy = labelled[keys.ENERGY]
    out[keys.ENERGY] = torch.cat([energy, energy.new_zeros(n_unl)])
    weight = labelled.get(keys.ENERGY_WEIGHT, energy.new_ones(n_lab))
    out[keys.ENERGY_WEIGHT] = torch.cat([weight, energy.new_zeros(n_unl)])
    if keys.FORCES in labelled:
        forces = labelled[keys.FORCES]
        n_atoms_unl = unlabelled[keys.POSITIONS].shape[0]
        out[keys.FORCES] = torch.cat([forces, forces.new_zeros((n_atoms_unl, 3))])
        weight = labelled.get(keys.FORCE_WEIGHT, energy.new_ones(n_lab))
        out[keys.FORCE_WEIGHT] = torch.cat([weight, energy.new_zeros(n_unl)])
    return out


class UnlabelledStream:
    """Endless batches of ``batch_size`` unlabelled structures for the weak losses.

    Walks a random permutation (drawn from ``generator``) and draws a new one when it runs out,
    so every structure is used equally often. Its position is part of a run's saved state.
    """

    def __init__(
        self,
        structures: Structures,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        self.structures, self.batch_size = structures, batch_size
        self.generator, self.device = generator, device
        self.order: torch.Tensor | None = None
        self.position = 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next ``batch_size`` structures as a batch dict (no labels)."""
        n, need, take = len(self.structures), self.batch_size, []
        while need > 0:
            if self.order is None or self.position >= n:
                self.order, self.position = torch.randperm(n, generator=self.generator), 0
            chunk = self.order[self.position : self.position + need]
            take.append(chunk)
            self.position += len(chunk)
            need -= len(chunk)
        return self.structures.batch(torch.cat(take).to(self.device))

    def state_dict(self) -> dict[str, object]:
        return {"order": self.order, "position": self.position}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.order, self.position = state["order"], int(state["position"])
