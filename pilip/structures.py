"""Read structure files robustly and validate structures before any expensive work.

Every check raises :class:`~pilip.errors.PilipError` with one line that names the file (and
frame, counted from 0) or config key, what is wrong and how to fix it. Nothing here writes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from pilip.config import check_name
from pilip.errors import PilipError

__all__ = [
    "DEFAULT_MIN_DISTANCE",
    "check_charge_multiplicity",
    "check_energy",
    "check_forces",
    "check_name",
    "closest_pair",
    "frame_label",
    "read_structures",
    "validate_atoms",
]

DEFAULT_MIN_DISTANCE = 0.6  # Angstrom; shorter than any bond (H2: 0.74 A)
MAX_ATOMIC_NUMBER = 118
_SNIFF_BYTES = 8192


def frame_label(path: str | os.PathLike, frame: int | None) -> str:
    """``FILE`` or ``FILE frame K`` (K counted from 0), the prefix of every message."""
    return f"{path}" if frame is None else f"{path} frame {frame}"


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the sniff window is still text.
        return exc.start < len(head) - 4
    return False


def read_structures(
    path: str | os.PathLike, index: str | int = ":", format: str | None = None
) -> list[Any]:
    """Read structures (ASE ``Atoms``, positions in Angstrom) from any ASE-readable file.

    ``index`` is ASE's frame selection (``":"`` all, ``0`` the first). The format is guessed
    from the name and content unless given. A missing, empty, binary (for a text format),
    malformed or truncated file, or an unknown element symbol, raises a one-line PilipError.
    The structures are not validated; see :func:`validate_atoms`.
    """
    import ase.io
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats

    path = Path(path)
    if not path.exists():
        raise PilipError(f"{path}: no such file")
    if not path.is_file():
        raise PilipError(f"{path}: not a file")
    if path.stat().st_size == 0 or (
        path.stat().st_size < _SNIFF_BYTES and not path.read_bytes().strip()
    ):
        raise PilipError(f"{path}: empty file; give a structure file (e.g. extended XYZ)")
    try:
        format = format or filetype(str(path), read=True)
    except (UnknownFileTypeError, OSError, ValueError) as exc:
        raise PilipError(
            f"{path}: unknown structure file format ({_reason(exc)}); use a format ASE reads "
            "(e.g. .xyz, .extxyz, .pdb, .traj)"
        ) from None
    if format not in ioformats:
        raise PilipError(f"{path}: unknown structure file format {format!r}")
    if not ioformats[format].isbinary and _looks_binary(path):
        raise PilipError(
            f"{path}: binary content, but {format} is a text format; give a text structure file"
        )
    try:
        frames = ase.io.read(str(path), index=index, format=format)
    except KeyError as exc:
        symbol = exc.args[0] if exc.args else "?"
        raise PilipError(
            f"{path}: unknown element symbol {symbol!r}; use element symbols H, He, ..., Og"
        ) from None
    except Exception as exc:  # ASE readers raise anything from ValueError to StopIteration
        raise PilipError(
            f"{path}: cannot read as {format} ({_reason(exc)}); the file is malformed or truncated"
        ) from None
    frames = list(frames) if isinstance(frames, list) else [frames]
    if not frames:
        raise PilipError(f"{path}: no structures in file; give a structure file with atoms")
    return frames


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    # ASE prefixes some messages with its module name
    reason = reason.removeprefix("ase.io.extxyz: ")
    return reason if len(reason) <= 120 else reason[:117] + "..."


def closest_pair(positions: np.ndarray) -> tuple[int, int, float]:
    """Indices (i < j) and distance (Angstrom) of the closest pair of atoms; (n, 3) input.

    Returns ``(-1, -1, inf)`` for fewer than two atoms. O(n log n) through a k-d tree.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(positions) < 2:
        return -1, -1, math.inf
    if len(positions) <= 64:
        diff = positions[:, None, :] - positions[None, :, :]
        dist = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        dist[np.diag_indices(len(positions))] = np.inf
        i, j = np.unravel_index(int(np.argmin(dist)), dist.shape)
    else:
        from scipy.spatial import cKDTree

        dist_nn, index_nn = cKDTree(positions).query(positions, k=2)
        i = int(np.argmin(dist_nn[:, 1]))
        j = int(index_nn[i, 1])
    i, j = (int(i), int(j)) if i < j else (int(j), int(i))
    return i, j, float(np.linalg.norm(positions[i] - positions[j]))


def check_charge_multiplicity(
    numbers: Sequence[int], charge: int, multiplicity: int, where: str
) -> None:
    """Raise unless ``charge`` and ``multiplicity`` (2S+1) fit the electron count."""
    electrons = int(np.sum(numbers)) - int(charge)
    unpaired = int(multiplicity) - 1
    if multiplicity < 1:
        raise PilipError(f"{where}: multiplicity {multiplicity} must be >= 1 (2S+1)")
    if electrons < 0:
        raise PilipError(
            f"{where}: charge {charge} leaves {electrons} electrons; use a charge <= "
            f"{int(np.sum(numbers))}"
        )
    if unpaired > electrons or (electrons - unpaired) % 2:
        parity = "even" if electrons % 2 == 0 else "odd"
        fits = "odd (1, 3, ...)" if parity == "even" else "even (2, 4, ...)"
        raise PilipError(
            f"{where}: charge {charge} and multiplicity {multiplicity} do not fit {electrons} "
            f"electrons; an {parity} electron count needs an {fits} multiplicity <= "
            f"{electrons + 1}"
        )


def validate_atoms(
    atoms: Any,
    where: str,
    *,
    min_distance: float | None = DEFAULT_MIN_DISTANCE,
    charge: int | None = None,
    multiplicity: int | None = None,
) -> None:
    """Check one structure: atoms present, real elements, finite positions, no clash, spin.

    ``where`` names the file/frame or config key in the message. ``min_distance`` in Angstrom
    (None skips the check). Charge and multiplicity are checked when both are given.
    """
    numbers = np.asarray(atoms.numbers)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if len(numbers) == 0:
        raise PilipError(f"{where}: no atoms; remove the empty structure")
    bad = np.flatnonzero((numbers < 1) | (numbers > MAX_ATOMIC_NUMBER))
    if len(bad):
        from ase.data import chemical_symbols

        z = int(numbers[bad[0]])
        symbol = chemical_symbols[z] if 0 <= z < len(chemical_symbols) else str(z)
        raise PilipError(
            f"{where}: atom {int(bad[0])} is not a real element ({symbol!r}, Z={z}); use element "
            "symbols H ... Og"
        )
    finite = np.isfinite(positions).all(axis=1)
    if not finite.all():
        atom = int(np.flatnonzero(~finite)[0])
        raise PilipError(
            f"{where}: atom {atom} has a non-finite coordinate {positions[atom].tolist()}; fix "
            "or remove this structure"
        )
    if min_distance is not None:
        i, j, distance = closest_pair(positions)
        if distance < min_distance:
            raise PilipError(
                f"{where}: atoms {i} and {j} are {distance:.3f} A apart, closer than "
                f"min_distance {min_distance} A; fix the geometry or lower the threshold"
            )
    if charge is not None and multiplicity is not None:
        check_charge_multiplicity(numbers, charge, multiplicity, where)


def check_energy(value: Any, where: str, key: str = "energy") -> float:
    """Return a finite energy as float, else raise (``key`` names the property in the file)."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise PilipError(f"{where}: {key} {value!r} is not a number; fix the {key} value")
    if not math.isfinite(float(value)):
        raise PilipError(f"{where}: {key} is {float(value)}; fix or remove this structure")
    return float(value)


def check_forces(value: Any, n_atoms: int, where: str, key: str = "forces") -> np.ndarray:
    """Return finite forces as float64 (n_atoms, 3), else raise."""
    try:
        forces = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PilipError(f"{where}: {key} are not numbers; fix the {key} columns") from None
    if forces.shape != (n_atoms, 3):
        raise PilipError(
            f"{where}: {key} have shape {forces.shape}, expected ({n_atoms}, 3); fix the "
            f"{key} columns"
        )
    finite = np.isfinite(forces).all(axis=1)
    if not finite.all():
        atom = int(np.flatnonzero(~finite)[0])
        raise PilipError(
            f"{where}: {key} on atom {atom} are not finite {forces[atom].tolist()}; fix or "
            "remove this structure"
        )
    return forces
