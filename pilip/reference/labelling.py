"""Label a configurations table with one reference method, resumably.

``label_table`` is what ``pilip label`` runs:

1. read the configurations (a configurations table, or a dataset table whose configurations
   are labelled; ``--ids``/``--limit`` pick some) and resolve the reference: a name in the
   config's ``references``, an inline Psi4 method string such as ``mp2/cc-pv[dt]z`` (run with
   Psi4's defaults), or an inline tight-binding name ``gfn2-xtb``/``gfn1-xtb`` (tblite's
   defaults, always with forces: they cost nothing extra);
2. pre-flight, before any quantum chemistry: the backend validates its spec and checks the
   configurations (electron count, elements, interpreter, ...);
3. the backend appends one JSON line per finished configuration to the results file beside
   the output (``<out stem>.results.jsonl``); a rerun computes only configurations without a
   line, so a killed job loses at most the geometries in progress;
4. the labels table (every configuration, failures as rows) is written atomically.

``--retry-failed`` forgets the failed/timed-out lines first, so only those are recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pilip import keys, tables
from pilip.errors import PilipError
from pilip.reference import labels
from pilip.reference.backends import Backend, make_backend
from pilip.reference.backends.base import read_results
from pilip.reference.backends.psi4_backend import Psi4Backend
from pilip.reference.backends.xtb_backend import METHODS as XTB_METHODS
from pilip.scratch import scratch_folder


@dataclasses.dataclass
class Reference:
    """A resolved reference: its name (the labels' ``reference`` column) and config entry."""

    name: str
    spec: dict[str, Any]
    inline: bool = False
    forces: bool = False  # always compute forces (inline tight binding: they are free)


@dataclasses.dataclass
class LabelReport:
    """What one ``label_table`` call did."""

    output: Path
    counts: dict[str, int]  # status -> rows
    computed: int  # configurations computed by this call
    retried: int  # failed rows forgotten by --retry-failed


def labelling_defaults() -> dict[str, Any]:
    """The ``labelling`` section's defaults from the config schema."""
    from pilip.config import load_schema

    section = load_schema()["properties"]["labelling"]["properties"]
    return {name: spec.get("default") for name, spec in section.items()}


def load_study_config(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The validated config at ``path``, or None when ``path`` is None or absent."""
    from pilip.config import load_config

    if path is None or not Path(path).is_file():
        return None
    return load_config(path)


def resolve_reference(reference: str, config: dict[str, Any] | None, config_path: Any) -> Reference:
    """A reference name from ``config['references']``, else an inline method.

    Inline: ``gfn2-xtb``/``gfn1-xtb``/``ipea1-xtb`` (tblite, energies and forces) or a Psi4
    method string such as ``mp2/cc-pv[dt]z`` or ``wb97x-d/def2-svp``.
    """
    known = (config or {}).get("references", {})
    if reference in known:
        return Reference(reference, dict(known[reference]))
    if reference.lower() in XTB_METHODS:
        spec = {"backend": "xtb", "method": XTB_METHODS[reference.lower()]}
        return Reference(reference.lower(), spec, inline=True, forces=True)
    if "/" in reference and not reference.startswith("/"):
        # run with Psi4's own defaults, so the numbers equal psi4.energy(reference)
        return Reference(reference, {"backend": "psi4", "method": reference}, inline=True)
    where = f"{config_path}" if config is not None else f"{config_path} (not found)"
    names = ", ".join(known) or "none"
    raise PilipError(
        f"--reference {reference!r} is neither a reference in {where} (known: {names}) nor an "
        f"inline method ({', '.join(XTB_METHODS)}, or a Psi4 method string like mp2/cc-pv[dt]z)"
    )


def read_configs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Configurations as backend config dicts (positions in Angstrom), checked for NaN/inf.

    ``path`` is a configurations table or a dataset table (its configurations; the labels'
    ``config_id`` is the dataset's ``id``, so they join back).
    """
    table = tables.read_table(path, kind=("configurations", "dataset"))
    needed = (keys.ID, keys.NUMBERS, keys.POSITIONS, keys.CHARGE, keys.MULTIPLICITY)
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise PilipError(
            f"{path}: no column(s) {', '.join(missing)}; is it a configurations table?"
        )
    ids = table.column(keys.ID).to_pylist()
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise PilipError(
            f"{path}: configuration id {duplicates[0]} appears twice; remove duplicates"
        )
    positions = tables.rows_of(table.column(keys.POSITIONS)) if table.num_rows else []
    numbers = table.column(keys.NUMBERS).to_pylist()
    configs = []
    for i, config_id in enumerate(ids):
        xyz = positions[i]
        if not np.all(np.isfinite(xyz)):
            raise PilipError(f"{path}: configuration {config_id} has NaN or infinite positions")
        if len(numbers[i]) != len(xyz):
            raise PilipError(
                f"{path}: configuration {config_id}: numbers and positions differ in length"
            )
        configs.append(
            {
                "id": config_id,
                "numbers": [int(z) for z in numbers[i]],
                "positions": np.asarray(xyz, dtype=np.float64).tolist(),
                "charge": int(table.column(keys.CHARGE)[i].as_py()),
                "multiplicity": int(table.column(keys.MULTIPLICITY)[i].as_py()),
            }
        )
    return configs


def parse_ids(text: str) -> list[str]:
    """``--ids``: a file of ids (whitespace-separated, ``#`` comments) or ``id,id,...``."""
    path = Path(text)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        ids = [word for line in lines for word in line.split("#", 1)[0].split()]
        if not ids:
            raise PilipError(f"--ids {text}: the file lists no configuration ids")
        return ids
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids or any(os.sep in i or i.endswith((".txt", ".csv")) for i in ids):
        raise PilipError(
            f"--ids {text!r}: not a file of ids, nor ids separated by commas (id,id,...)"
        )
    return ids


def select_configs(
    configs: list[dict[str, Any]],
    path: str | os.PathLike,
    ids: list[str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The configurations named by ``ids`` (in table order), then the first ``limit`` of them."""
    if ids is not None:
        wanted = set(ids)
        missing = [i for i in dict.fromkeys(ids) if i not in {c["id"] for c in configs}]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise PilipError(
                f"--ids: configuration {missing[0]}{more} is not in {path}; use ids of its "
                "`id` column"
            )
        configs = [c for c in configs if c["id"] in wanted]
    if limit is not None:
        if limit < 1:
            raise PilipError(f"--limit must be at least 1, got {limit}")
        configs = configs[:limit]
    return configs


def check_results_match(results: Path, backend: Backend) -> None:
    """Refuse to resume from a results file written by another program, method or options."""
    records = read_results(results)
    if not records:
        return
    want = backend.provenance()
    want_options = json.dumps(want["options"], sort_keys=True)
    for record in records.values():
        if record.get("status") != keys.STATUS_OK:
            continue
        if record.get("program") != want["program"] or record.get("method") != want["method"]:
            raise PilipError(
                f"{results} holds {record.get('program')} {record.get('method')!r} results, not "
                f"{want['program']} {want['method']!r}; delete it or write to another -o"
            )
        if json.dumps(record.get("options") or {}, sort_keys=True) != want_options:
            raise PilipError(
                f"{results} holds results computed with options {record.get('options')}, not "
                f"{want['options']}; delete it or write to another -o"
            )


def label_table(
    configs_path: str | os.PathLike,
    reference: str,
    output: str | os.PathLike,
    *,
    config_path: str | os.PathLike | None = "config.yaml",
    threads: int | None = None,
    gradients: bool = False,
    retry_failed: bool = False,
    mem_mb: int | None = None,
    ids: list[str] | None = None,
    limit: int | None = None,
) -> LabelReport:
    """Label the configurations of ``configs_path`` and write the labels table ``output``.

    ``configs_path`` is a configurations or a dataset table; ``ids`` (a list of ids) and
    ``limit`` (the first N, after ``ids``) label part of it, and the table holds those rows.
    Energies in eV, forces (with ``gradients``, always for inline tight binding) in eV/A,
    components in Hartree. All input checks run before any quantum chemistry; nothing is
    written when one fails.
    """
    output = Path(output)
    config = load_study_config(config_path)
    settings = labelling_defaults()
    if config is not None:
        settings.update(config.get("labelling", {}))
    if threads is not None:
        if threads < 1:
            raise PilipError(f"--threads must be at least 1, got {threads}")
        settings["threads"] = threads
    if mem_mb is not None:
        if mem_mb < 100:
            raise PilipError(f"--mem-mb must be at least 100, got {mem_mb}")
        settings["mem_mb"] = mem_mb
    ref = resolve_reference(reference, config, config_path)
    gradients = gradients or ref.forces

    configs = select_configs(read_configs(configs_path), configs_path, ids, limit)
    backend = make_backend(ref.name, ref.spec)
    backend.memory_mb = int(settings["mem_mb"]) if settings.get("mem_mb") else None
    if isinstance(backend, Psi4Backend):
        backend.configured_python = settings.get("psi4_python")  # the worker's interpreter
    else:
        # in-process backends (tblite, PySCF) read the thread count when their libraries load
        os.environ["OMP_NUM_THREADS"] = str(settings["threads"])
    backend.check(configs)

    # the results file, Psi4's text output and the table all live beside the output
    output.parent.mkdir(parents=True, exist_ok=True)
    results = labels.results_path_for(output)
    if not results.exists() and output.exists():
        labels.seed_results(results, labels.read_labels(output))
    check_results_match(results, backend)
    retried = labels.drop_failed_results(results) if retry_failed else []
    if gradients:
        # rows computed earlier without forces must be computed again with them
        labels.rewrite_results(
            results, lambda r: r.get("status") == keys.STATUS_OK and r.get("forces") is None
        )
    before = len(read_results(results))

    retry_options = ref.spec.get("retry_options") if settings["retry"] else None
    # a killed job's scratch folder is removed by the next label job on this host
    with scratch_folder("pilip-label", settings.get("scratch")) as scratch:
        backend.run(
            configs,
            results,
            threads=int(settings["threads"]),
            gradients=gradients,
            scratch=Path(scratch),
            retry_options=retry_options,
            timeout_s=settings.get("timeout"),
        )

    done = read_results(results)
    provenance = backend.provenance()
    records = [
        done.get(c["id"])
        or labels.missing_record(c["id"], provenance, "the backend wrote no result for it")
        for c in configs
    ]
    table = labels.labels_table(records, ref.name)
    labels.write_labels(
        table,
        output,
        provenance={
            "command": "pilip label",
            "configurations": str(configs_path),
            "reference": ref.name,
            "spec": ref.spec,
            "gradients": gradients,
            **{k: provenance[k] for k in ("program", "program_version", "method")},
        },
    )
    counts = Counter(r["status"] for r in records)
    return LabelReport(
        output=output,
        counts={s: counts.get(s, 0) for s in labels.STATUSES},
        computed=len(done) - before,
        retried=len(retried),
    )
