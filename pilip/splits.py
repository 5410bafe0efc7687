"""Deterministic train/val/test assignment from the configuration id.

Each configuration's split depends only on its id (a content hash) and the fractions, never
on the order or number of rows: re-importing, growing a dataset or re-running a stage never
moves a configuration between splits, and duplicates of one geometry always share a split.
The realised fractions therefore scatter around the requested ones (binomially) for small
tables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from pilip import keys
from pilip.errors import PilipError

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test


def parse_fractions(text: str, where: str = "--splits") -> tuple[float, float, float]:
    """Parse ``"0.8,0.1,0.1"`` into (train, val, test) fractions that are >= 0 and sum to 1."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise PilipError(
            f"{where}: expected three numbers like 0.8,0.1,0.1 (train,val,test), got {text!r}"
        ) from None
    return check_fractions(values, where)


def check_fractions(values: Sequence[float], where: str) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three finite numbers >= 0 summing to 1."""
    if len(values) != 3:
        raise PilipError(f"{where}: expected three fractions (train,val,test), got {len(values)}")
    if any(not (v >= 0.0) or v == float("inf") for v in values) or abs(sum(values) - 1.0) > 1e-9:
        shown = ",".join(f"{v:g}" for v in values)
        raise PilipError(f"{where}: fractions must be >= 0 and sum to 1, got {shown}")
    return (float(values[0]), float(values[1]), float(values[2]))


def unit_interval(config_id: str) -> float:
    """Map an id to a number in [0, 1), uniform over ids (sha256 of a salted id)."""
    digest = hashlib.sha256(b"pilip.split:" + config_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(
    ids: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    fixed: Mapping[str, str] | None = None,
) -> list[str]:
    """Split name (``train`` | ``val`` | ``test``) for every id, from the id's hash alone.

    ``fixed`` (id -> split) overrides the hash for the rows a user placed by hand.
    """
    train, val, _ = check_fractions(fractions, "splits")
    fixed = fixed or {}
    names = []
    for config_id in ids:
        if config_id in fixed:
            names.append(fixed[config_id])
            continue
        u = unit_interval(config_id)
        names.append(
            keys.SPLITS[0] if u < train else keys.SPLITS[1] if u < train + val else keys.SPLITS[2]
        )
    return names


def parse_assignments(items: Sequence[str], where: str) -> dict[str, str]:
    """``["water=test", ...]`` -> ``{"water": "test"}``; the split must be train, val or test."""
    assigned: dict[str, str] = {}
    for item in items:
        name, sep, split = item.partition("=")
        if not sep or not name or split not in keys.SPLITS:
            raise PilipError(
                f"{where}: expected NAME=SPLIT with SPLIT one of {', '.join(keys.SPLITS)}, "
                f"got {item!r}"
            )
        assigned[name] = split
    return assigned
