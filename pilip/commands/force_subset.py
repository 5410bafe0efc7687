"""``pilip force-subset``: pick the configurations labelled with forces for evaluation only."""

from __future__ import annotations

import argparse
import sys

HELP = "pick force-validation configurations (per system, from one split) from configurations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configurations", nargs="+", help="configurations tables (Parquet)")
    parser.add_argument("-o", "--output", required=True, help="configurations table to write")
    parser.add_argument(
        "--config",
        default="config.yaml",
        help="config file with `splits` and `force_validation` (split, per_system)",
    )


def run(args: argparse.Namespace) -> int:
    from pilip import keys, splits, tables
    from pilip.collect import force_validation_subset, read_configurations
    from pilip.config import load_config

    config = load_config(args.config)
    section = config["force_validation"]
    fractions = splits.check_fractions(
        [config["splits"][s] for s in ("train", "val", "test")], f"{args.config}: splits"
    )
    systems = config.get("systems") or {}
    subset = force_validation_subset(
        args.configurations,
        fractions,
        section["split"],
        int(section["per_system"]),
        split_of_system={n: spec["split"] for n, spec in systems.items() if "split" in spec},
        split_of_id=config["splits"]["by_id"],
    )
    tables.write_table(
        subset,
        args.output,
        kind="configurations",
        provenance={
            "command": "pilip force-subset",
            "sources": [str(p) for p in args.configurations],
            "split": section["split"],
            "per_system": section["per_system"],
        },
    )
    print(
        f"pilip force-subset: {subset.num_rows} configurations from the {section['split']} "
        f"split -> {args.output}",
        file=sys.stderr,
    )
    chosen = set(subset.column(keys.SYSTEM).to_pylist())
    for system in sorted(set(read_configurations(args.configurations)[keys.SYSTEM].to_pylist())):
        if system not in chosen:
            print(
                f"pilip force-subset: warning: system {system} has no configuration in the "
                f"{section['split']} split, so force validation selects 0 of it and its force "
                "errors will be missing; raise splits." + section["split"] + " or set splits "
                "by hand (systems.<name>.split, splits.by_id)",
                file=sys.stderr,
            )
    return 0
