"""``pilip import``: any ASE-readable structure file -> dataset (or configurations) Parquet."""

from __future__ import annotations

import argparse
import sys

HELP = "import structures (extxyz or any ASE format) with energies/forces into Parquet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="structure file ASE can read (.xyz, .extxyz, .traj, ...)")
    parser.add_argument("-o", "--output", required=True, help="table to write (Parquet)")
    parser.add_argument(
        "--reference",
        help="name of the method that made the energies (letters, digits, _ and -); "
        "default: the file's common `reference` value. Not needed without energies",
    )
    parser.add_argument("--energy-key", default="energy", help="energy property, eV")
    parser.add_argument("--forces-key", default="forces", help="forces property, eV/A")
    parser.add_argument("--no-forces", action="store_true", help="ignore forces in the file")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--splits",
        metavar="TRAIN,VAL,TEST",
        help="fractions assigned from each configuration's id hash (default 0.8,0.1,0.1, "
        "or the splits stored in the file)",
    )
    group.add_argument(
        "--split", choices=("train", "val", "test"), help="put every configuration in one split"
    )
    parser.add_argument(
        "--system", help="system name for all rows (default: from the file, or its name)"
    )
    parser.add_argument("--charge", type=int, default=0, help="charge where a frame has none")
    parser.add_argument(
        "--multiplicity", type=int, default=1, help="multiplicity 2S+1 where a frame has none"
    )
    parser.add_argument(
        "--min-distance",
        type=float,
        default=None,
        help="reject the file if two atoms are closer than this, Angstrom (default 0.6)",
    )
    parser.add_argument(
        "--force-validation",
        action="store_true",
        help="mark the forces as evaluation-only (never used in training)",
    )
    parser.add_argument("--format", help="ASE format name when the extension is ambiguous")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pilip import tables
    from pilip.extxyz import import_structures
    from pilip.splits import parse_fractions
    from pilip.structures import DEFAULT_MIN_DISTANCE

    fractions = parse_fractions(args.splits) if args.splits is not None else None
    min_distance = DEFAULT_MIN_DISTANCE if args.min_distance is None else args.min_distance
    result = import_structures(
        args.file,
        reference=args.reference,
        energy_key=args.energy_key,
        forces_key=None if args.no_forces else args.forces_key,
        fractions=fractions,
        split=args.split,
        system=args.system,
        charge=args.charge,
        multiplicity=args.multiplicity,
        min_distance=min_distance,
        force_validation=args.force_validation,
        format=args.format,
    )
    provenance = {
        "command": "import",
        "source": str(Path(args.file).resolve()),
        "energy_key": args.energy_key,
        "forces_key": None if args.no_forces else args.forces_key,
        "frames": result.n_frames,
        "duplicates_dropped": result.n_duplicates,
        "min_distance": min_distance,
    }
    tables.write_table(result.table, args.output, result.kind, provenance)
    print(
        f"pilip import: {result.table.num_rows} configurations ({result.kind}) from "
        f"{result.n_frames} frames, {result.n_duplicates} duplicates dropped -> {args.output}",
        file=sys.stderr,
    )
    return 0
