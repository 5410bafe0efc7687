"""``pilip distill``: a teacher labels a pool with energies and forces; a standalone student
learns them (pilip.potential.distill)."""

from __future__ import annotations

import argparse
import sys

HELP = "label a pool with a teacher model's energies and forces and train a student on them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pilip.commands.train import add_run_options
    from pilip.potential.recipes import student_settings
    from pilip.potential.train_config import add_train_options

    parser.add_argument("teacher", help="the teacher's checkpoint (any pilip model.pt)")
    parser.add_argument(
        "pool",
        nargs="+",
        help="configurations or dataset tables, or structure files (extxyz: e.g. a pilip md "
        "trajectory, md.extxyz), that the teacher labels",
    )
    parser.add_argument("--out", required=True, help="the student's run folder (+ pool.parquet)")
    parser.add_argument(
        "--baseline-labels",
        nargs="+",
        help="labels tables of the teacher's baseline for the pool (a baseline that cannot run "
        "in process, e.g. a Psi4 DFT level)",
    )
    parser.add_argument("--config", help="config.yaml whose `training` section gives settings")
    parser.add_argument("--variant", help="a name under training.variants in --config")
    parser.add_argument(
        "--teacher-device", default="auto", help="device the teacher labels on (auto, cpu, cuda)"
    )
    parser.add_argument(
        "--teacher-batch-size", type=int, default=64, help="structures per teacher call"
    )
    add_train_options(parser, student_settings())
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from pilip.commands.train import given_options, resolve_settings, train_run
    from pilip.digests import file_sha256
    from pilip.errors import PilipError
    from pilip.potential import distill
    from pilip.potential.checkpoint import load_model, read_checkpoint
    from pilip.potential.devices import resolve_device
    from pilip.potential.recipes import describe, student_settings
    from pilip.potential.recipes.distilled import Distilled
    from pilip.potential.train_config import option_values

    def log(message: str) -> None:
        print(f"pilip distill: {message}", file=sys.stderr)

    teacher_path, out = Path(args.teacher), Path(args.out)
    if (out / "model.pt").resolve() == teacher_path.resolve() or (
        out / "last.pt"
    ).resolve() == teacher_path.resolve():
        raise PilipError(
            f"--out {out} holds the teacher {teacher_path}: a student cannot distil from "
            "itself; choose another --out"
        )
    if args.teacher_batch_size < 1:
        raise PilipError(f"--teacher-batch-size {args.teacher_batch_size}: must be >= 1")
    meta = read_checkpoint(teacher_path)["meta"]
    pool, split = distill.read_pool(args.pool, log)
    distill.check_pool(pool, split, meta, str(teacher_path))
    distill.check_tabled_coverage(meta, pool, args.baseline_labels, str(teacher_path))
    teacher = {
        "path": str(teacher_path),
        "sha256": file_sha256(teacher_path),
        "recipe": describe(meta),
        "pool": [str(p) for p in args.pool],
        # what the files held (a rerun of the teacher's MD rewrites md.extxyz in place)
        "pool_ids_sha256": distill.ids_sha256(pool),
    }
    given = {**given_options(args, recipes=False), **option_values(args, student_settings())}
    # every student setting is checked before the teacher labels anything
    settings = resolve_settings(args, given, defaults={"losses": ["energy", "forces"]})
    own = [f.name for f in dataclasses.fields(student_settings())]
    student = {k: settings[2].pop(k) for k in own if k in settings[2]}
    recipe_options = {k: v for k, v in settings[2].items() if v is not None}
    if recipe_options:
        raise PilipError(
            f"the student takes no recipe settings, but --config/--variant give "
            f"{', '.join(sorted(recipe_options))}; choose a variant without them"
        )
    reference = distill.reference_energies(
        meta, str(teacher_path), student.get("reference_weight"), student.get("reference_dataset")
    )

    dataset = out / distill.POOL_FILE
    if distill.pool_is_current(dataset, teacher):
        log(f"{dataset}: the teacher's labels of the pool, from an earlier run")
    else:
        device = resolve_device(args.teacher_device)
        inputs = {}
        if args.baseline_labels:
            inputs = {"baseline_labels": args.baseline_labels, "structures": args.pool}
        model, _ = load_model(teacher_path, device, **inputs)
        log(f"the teacher ({teacher['recipe']}) labels {pool.num_rows} pool structures")
        energy, forces = distill.label_pool(model, pool, device, args.teacher_batch_size)
        out.mkdir(parents=True, exist_ok=True)
        distill.write_pool_dataset(pool, split, energy, forces, dataset, teacher)
    record = {"teacher": {k: teacher[k] for k in ("path", "sha256", "recipe")},
              "pool": teacher["pool"]}  # fmt: skip
    structures = None
    if reference is not None:
        record["reference"], structures = reference
    recipe = Distilled(record, structures, trained_on=meta.get("reference"))
    return train_run(args, str(dataset), given, settings, extra=[recipe])
