"""``pilip label``: label a configurations (or dataset) table with one reference (resumable)."""

from __future__ import annotations

import argparse
import sys

HELP = "label configurations with a reference method (resumes; failures kept as rows)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "configurations",
        help="configurations table, or a dataset table whose configurations are labelled "
        "(Parquet; the labels' config_id is its id)",
    )
    parser.add_argument(
        "--reference",
        required=True,
        help="a name in the config's `references`; or inline: gfn2-xtb, gfn1-xtb (tblite, "
        "energies and forces) or a Psi4 method string such as mp2/cc-pv[dt]z or "
        "wb97x-d/def2-svp (run with Psi4's own defaults)",
    )
    parser.add_argument("-o", "--output", required=True, help="labels table to write (Parquet)")
    parser.add_argument(
        "--config", default="config.yaml", help="config file with `references` and `labelling`"
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="recompute only the rows that failed or timed out in an earlier run",
    )
    parser.add_argument("--threads", type=int, help="threads (default: labelling.threads)")
    parser.add_argument(
        "--mem-mb",
        type=int,
        help="memory of the job in MB, 80%% of it for the program (default: labelling.mem_mb)",
    )
    parser.add_argument(
        "--forces", action="store_true", help="compute forces (eV/A) as well as energies"
    )
    parser.add_argument(
        "--ids",
        metavar="FILE|ID,ID",
        help="label only these configurations: a file of ids (one per line) or ids separated "
        "by commas",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="label only the first N configurations (after --ids)"
    )


def run(args: argparse.Namespace) -> int:
    from pilip.reference.labelling import label_table, parse_ids

    report = label_table(
        args.configurations,
        args.reference,
        args.output,
        config_path=args.config,
        threads=args.threads,
        gradients=args.forces,
        retry_failed=args.retry_failed,
        mem_mb=args.mem_mb,
        ids=parse_ids(args.ids) if args.ids is not None else None,
        limit=args.limit,
    )
    counts = ", ".join(f"{status} {n}" for status, n in report.counts.items())
    retried = f", {report.retried} failed rows retried" if args.retry_failed else ""
    print(
        f"pilip label: {sum(report.counts.values())} configurations ({counts}); "
        f"computed {report.computed} now{retried} -> {report.output}",
        file=sys.stderr,
    )
    return 0
