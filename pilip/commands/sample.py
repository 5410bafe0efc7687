"""``pilip sample``: one system of the config -> its configurations table (Parquet)."""

from __future__ import annotations

import argparse
import sys

HELP = "sample configurations of one system (seed, rattle, normal modes, MD) into Parquet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.yaml", help="config file (YAML)")
    parser.add_argument("--system", required=True, help="a name in the config's `systems`")
    parser.add_argument("-o", "--output", required=True, help="configurations table to write")
    parser.add_argument(
        "--extra-pool",
        action="store_true",
        help="the cheap level's extra pool instead: cheap_level.extra_pool times the "
        "configurations, same samplers, another seed, no seed geometry",
    )


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from pilip import tables
    from pilip.config import config_hash, load_config
    from pilip.errors import PilipError
    from pilip.sampling import sample_system

    config = load_config(args.config)
    if not config.get("systems"):
        raise PilipError(
            f"{args.config}: no `systems:` to sample; add systems.<name>.seed (an ASE molecule "
            "name or a structure file)"
        )
    config_dir = Path(args.config).resolve().parent
    if args.extra_pool:
        from pilip.sampling import sample_extra_pool

        factor = int(config["cheap_level"]["extra_pool"])
        table, stats = sample_extra_pool(config, args.system, factor, config_dir)
    else:
        table, stats = sample_system(config, args.system, config_dir)
    provenance = {
        "command": "sample --extra-pool" if args.extra_pool else "sample",
        "config_hash": config_hash(config),
        "system": args.system,
        "sampling": config["sampling"],
        "generators": [asdict(s) for s in stats],
    }
    tables.write_table(table, args.output, "configurations", provenance)
    for s in stats:
        print(
            f"pilip sample: {args.system} {s.kind}: {s.generated} generated, {s.rejected} rejected "
            f"(min_distance), {s.duplicates} duplicates, {s.kept} kept",
            file=sys.stderr,
        )
    print(f"pilip sample: {table.num_rows} configurations -> {args.output}", file=sys.stderr)
    return 0
