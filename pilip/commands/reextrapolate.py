"""``pilip reextrapolate``: new totals of a labels table from its stored components, no QM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "recompute the energies of a labels table from its components with another CBS formula"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", help="labels table written by `pilip label` (Parquet)")
    parser.add_argument("-o", "--output", required=True, help="labels table to write")
    parser.add_argument(
        "--formula",
        required=True,
        help="extrapolation recipe as a YAML mapping or a YAML file, in the backend's terms "
        '(see docs/backends.md), e.g. "{scf: scf_xtpl_truhlar_2, corl: corl_xtpl_helgaker_2}"',
    )
    parser.add_argument(
        "--name", help="reference name of the new table (default: the original's + '_rx')"
    )


def parse_formula(text: str) -> dict[str, Any]:
    import yaml

    from pilip.errors import PilipError

    source = Path(text).read_text(encoding="utf-8") if Path(text).is_file() else text
    try:
        formula = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PilipError(
            f"--formula: not valid YAML ({problem}); quote values with brackets, "
            "e.g. \"{method: 'mp2/cc-pv[tq]z'}\""
        ) from None
    if not isinstance(formula, dict):
        raise PilipError(
            f"--formula: expected a mapping such as {{corl: corl_xtpl_helgaker_2}}, got {text!r}"
        )
    return formula


def run(args: argparse.Namespace) -> int:
    from pilip import tables
    from pilip.errors import PilipError
    from pilip.reference import labels
    from pilip.reference.backends import make_backend

    formula = parse_formula(args.formula)
    table = labels.read_labels(args.labels)
    provenance = tables.table_provenance(table)
    if "spec" not in provenance or "reference" not in provenance:
        raise PilipError(
            f"{args.labels}: no reference recipe in its provenance (not written by pilip label)"
        )
    backend = make_backend(provenance["reference"], provenance["spec"])
    name = args.name or f"{provenance['reference']}_rx"
    method = backend.formula_label(formula)
    new = labels.reextrapolate_table(
        table, lambda components: backend.extrapolate(components, formula), name, method
    )
    # the new table's own date and pilip version (write_table adds them); the source's are kept
    inherited = {k: v for k, v in provenance.items() if k not in ("created", "pilip_version")}
    labels.write_labels(
        new,
        args.output,
        provenance={
            **inherited,
            "command": "pilip reextrapolate",
            "source": str(args.labels),
            "formula": formula,
            "reference": name,
            "method": method,
            "original_reference": provenance["reference"],
            "original_method": provenance.get("method"),
            "original_created": provenance.get("created"),
        },
    )
    print(f"pilip reextrapolate: {new.num_rows} rows as {name!r} -> {args.output}", file=sys.stderr)
    return 0
