"""``pilip collect``: configurations + ok labels -> dataset table with splits, and a summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "join configurations and ok labels into a dataset table with splits and a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configurations",
        nargs="+",
        required=True,
        help="configurations tables, or dataset tables whose rows keep their split unless "
        "--splits is given or the split is set by hand (Parquet)",
    )
    parser.add_argument(
        "--labels", nargs="+", required=True, help="labels tables of one reference, or folders"
    )
    parser.add_argument(
        "--force-validation",
        nargs="*",
        default=[],
        help="labels tables with forces, for evaluation only (force_validation = true)",
    )
    parser.add_argument("-o", "--output", required=True, help="dataset table to write (Parquet)")
    parser.add_argument("--summary", help="summary text file (default: OUTPUT with .summary.txt)")
    parser.add_argument(
        "--config",
        default="config.yaml",
        help="config file whose `splits` (and systems.<name>.split) are used, if it exists",
    )
    parser.add_argument(
        "--splits", help="train,val,test fractions, e.g. 0.8,0.1,0.1 (overrides the config)"
    )
    parser.add_argument(
        "--system-split",
        action="append",
        default=[],
        metavar="SYSTEM=SPLIT",
        help="put every configuration of SYSTEM in SPLIT (train, val, test), e.g. a held-back "
        "molecule as water=test; repeatable; overrides the config",
    )
    parser.add_argument(
        "--id-split",
        action="append",
        default=[],
        metavar="ID=SPLIT",
        help="put the configuration with this id in SPLIT; repeatable; overrides the config",
    )


def settings_from(args: argparse.Namespace) -> tuple[tuple[float, float, float], dict, dict]:
    """(fractions, split of system, split of id): defaults < --config < options."""
    from pilip import splits

    fractions = splits.DEFAULT_FRACTIONS
    by_system: dict[str, str] = {}
    by_id: dict[str, str] = {}
    if Path(args.config).is_file():
        from pilip.config import load_config

        config = load_config(args.config)
        section = config["splits"]
        fractions = splits.check_fractions(
            [section["train"], section["val"], section["test"]], f"{args.config}: splits"
        )
        systems = config.get("systems") or {}
        by_system = {name: spec["split"] for name, spec in systems.items() if "split" in spec}
        by_id = dict(section["by_id"])
    if args.splits:
        fractions = splits.parse_fractions(args.splits)
    by_system.update(splits.parse_assignments(args.system_split, "--system-split"))
    by_id.update(splits.parse_assignments(args.id_split, "--id-split"))
    return fractions, by_system, by_id


def run(args: argparse.Namespace) -> int:
    from pilip import tables
    from pilip.atomic_io import atomic_path
    from pilip.collect import collect, dataset_provenance, summary_text

    output = Path(args.output)
    summary = Path(args.summary) if args.summary else output.with_name(f"{output.stem}.summary.txt")
    fractions, by_system, by_id = settings_from(args)
    collected = collect(
        args.configurations,
        args.labels,
        fractions,
        args.force_validation,
        keep_splits=args.splits is None,
        split_of_system=by_system,
        split_of_id=by_id,
    )
    text = summary_text(collected, output)
    tables.write_table(
        collected.table,
        output,
        kind="dataset",
        provenance=dataset_provenance(
            collected,
            fractions,
            configurations=[str(p) for p in args.configurations],
            labels=[str(p) for p in args.labels],
            split_of_system=by_system,
            split_of_id=by_id,
        ),
    )
    with atomic_path(summary) as tmp:
        tmp.write_text(text, encoding="utf-8")
    sys.stderr.write(text)
    return 0
