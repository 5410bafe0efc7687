"""``pilip md MODEL DATASET --out DIR``: Langevin NVT stability test of a trained model."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pilip.potential.md_runs import CHECKPOINT_S, RUNS_DIR

if TYPE_CHECKING:
    from pilip.potential.md import MDSettings

HELP = "MD stability test: Langevin NVT from test configurations, stops when a bond breaks"

MD_FILE = "md.json"
TRAJECTORY_FILE = "md.extxyz"
SPREAD_FILE = "md_spread.csv"  # a committee's force spread per kept frame (header only if none)
CANDIDATES_FILE = "md_candidates.parquet"  # frames above --spread-threshold (empty if none)
# options that map one to one onto pilip.potential.md.MDSettings fields
# fewer MD frames or test structures per system than this make h(r) a noisy number: say so
MIN_HR_FRAMES = 10
SETTINGS = (
    "temperature",
    "timestep",
    "steps",
    "friction",
    "bond_threshold",
    "seed",
    "trajectory_interval",
    "proton_transfer",
)


def committee_run(training: Mapping[str, Any], run: str) -> bool:
    """Whether the workflow run ``run`` is a committee: ``ensemble`` > 1 in its variant of
    ``training`` (the config's section) or in ``training`` itself. Not a variant (the cheap
    level alone): False."""
    if run not in training.get("variants", {}):
        return False
    variant = training["variants"][run] or {}
    return int(variant.get("ensemble", training.get("ensemble")) or 1) > 1


def workflow_options(md: Mapping[str, Any], training: Mapping[str, Any], run: str) -> str:
    """The ``pilip md`` options of the workflow's run ``run`` from the config's ``md`` and
    ``training`` sections: every MD setting and ``--starts``; ``--spread-threshold`` for a
    committee run only (a single model has no spread, and ``pilip md`` refuses it one)."""
    options = [f"--{name.replace('_', '-')} {md[name]}" for name in (*SETTINGS, "starts")]
    if md.get("spread_threshold") is not None and committee_run(training, run):
        options.append(f"--spread-threshold {md['spread_threshold']}")
    return " ".join(options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults (None here) come from pilip.potential.md.MDSettings, the same as the config schema's.
    parser.add_argument("model", type=Path, help="checkpoint written by pilip train (model.pt)")
    parser.add_argument("dataset", type=Path, help="dataset table; MD starts from its test split")
    parser.add_argument(
        "--out",
        "-o",
        type=Path,
        required=True,
        help=f"folder for {MD_FILE}, {TRAJECTORY_FILE}, {SPREAD_FILE} and {CANDIDATES_FILE}; "
        f"finished runs are kept in {RUNS_DIR}/ and reused by a rerun with the same model, "
        "starts and settings; a run cut short continues from its last saved step",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--temperature", type=float, help="thermostat, K (default 300)")
    parser.add_argument("--timestep", type=float, help="fs (default 0.5)")
    parser.add_argument("--steps", type=int, help="MD steps per run (default 2000)")
    parser.add_argument("--friction", type=float, help="Langevin friction, 1/fs (default 0.01)")
    parser.add_argument(
        "--bond-threshold",
        type=float,
        help="A: a run fails when a starting bond length changes by more than this (default 0.5)",
    )
    parser.add_argument(
        "--starts", type=int, default=1, help="starting test configurations per system (default 1)"
    )
    parser.add_argument(
        "--runs",
        metavar="LIST",
        help="only these runs of the test, numbered from 0 as in md.json (e.g. 1-4 or 0,2): "
        "a test split between jobs or sessions; each run keeps the seed and the md_runs/ "
        "entry it has in the whole test (default: all)",
    )
    parser.add_argument("--seed", type=int, help="random seed of run 0 (default 0)")
    parser.add_argument(
        "--trajectory-interval", type=int, help="steps between saved frames (default 10)"
    )
    parser.add_argument(
        "--proton-transfer",
        choices=("fail", "allow"),
        help="fail: every broken starting bond ends a run (Fu et al.; default); allow: a "
        "hydrogen that leaves an N, O, F or S for another one is a proton transfer, counted "
        "in md.json, not a failure",
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        help="runs simulated at once, each in a process of its own with one CPU thread "
        "(default 1: one after another in this process); the runs' results do not depend on it",
    )
    parser.add_argument(
        "--checkpoint-s",
        type=float,
        default=CHECKPOINT_S,
        metavar="SECONDS",
        help=f"wall-clock seconds between saves of a running run's progress in {RUNS_DIR}/ "
        f"(default {CHECKPOINT_S:g}): a killed run loses at most this much simulation",
    )
    parser.add_argument(
        "--spread-threshold",
        type=float,
        metavar="EV_PER_A",
        help=f"committee models only: kept frames whose force spread (largest per-atom norm "
        f"of the members' force std, eV/A) exceeds this go to {CANDIDATES_FILE}, a "
        "configurations table for pilip label (default: none)",
    )


def settings_from_args(args: argparse.Namespace) -> MDSettings:
    """MDSettings from the command line; options not given keep MDSettings' defaults."""
    from pilip.errors import PilipError
    from pilip.potential.md import MDSettings

    given = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    settings = MDSettings(**given)
    positive = {
        "--timestep": settings.timestep,
        "--steps": settings.steps,
        "--bond-threshold": settings.bond_threshold,
        "--starts": args.starts,
        "--trajectory-interval": settings.trajectory_interval,
    }
    if args.spread_threshold is not None:
        positive["--spread-threshold"] = args.spread_threshold
    for flag, value in positive.items():
        if not value > 0:  # NaN too
            raise PilipError(f"{flag} {value}: use a positive number")
    for flag, value in {
        "--temperature": settings.temperature,
        "--friction": settings.friction,
    }.items():
        if value < 0:
            raise PilipError(f"{flag} {value}: use a number >= 0")
    if args.jobs < 1:
        raise PilipError(f"--jobs {args.jobs}: use 1 or more processes")
    if not args.checkpoint_s >= 0:  # NaN too
        raise PilipError(f"--checkpoint-s {args.checkpoint_s}: use a number of seconds >= 0")
    return settings


def run_numbers(spec: str, n_runs: int) -> list[int]:
    """The run numbers of ``--runs`` (``"1-4"``, ``"0,2"``, ``"0,3-4"``), sorted, each below
    ``n_runs``; PilipError saying what to give otherwise."""
    from pilip.errors import PilipError

    numbers: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise PilipError(
                f"--runs {spec}: give run numbers and ranges from 0, e.g. 1-4 or 0,2"
            ) from None
        if not 0 <= low <= high < n_runs:
            raise PilipError(
                f"--runs {spec}: this test has runs 0-{n_runs - 1} (--starts per system); "
                "give numbers in that range, or more --starts"
            )
        numbers.update(range(low, high + 1))
    return sorted(numbers)


def report(line: str) -> None:
    """One line of progress or a warning to stderr (stdout carries the result)."""
    import sys

    print(f"pilip md: {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import json
    from functools import partial

    from pilip.atomic_io import atomic_path
    from pilip.digests import file_sha256
    from pilip.potential.calculator import PilipCalculator
    from pilip.potential.md import (
        by_system,
        first_per_system,
        stability_test,
        test_structures,
        write_trajectory,
    )
    from pilip.potential.md_runs import RunStore
    from pilip.potential.md_spread import (
        candidates_table,
        require_committee,
        write_spread_csv,
    )
    from pilip.tables import write_table

    settings = settings_from_args(args)
    threshold = args.spread_threshold
    structures = test_structures(args.dataset)
    starts = first_per_system(structures, args.starts)
    only = None if args.runs is None else run_numbers(args.runs, len(starts))
    # with --jobs > 1 every worker process builds its own calculator the same way
    make_calculator = partial(PilipCalculator, args.model, device=args.device)
    calculator = make_calculator()
    if threshold is not None:
        require_committee(calculator, starts[0], f"--spread-threshold {threshold:g}", args.model)
    # runs are kept in --out/md_runs, finished or every --checkpoint-s seconds: a rerun after
    # a kill simulates only what is left
    store = RunStore(args.out, file_sha256(args.model), args.checkpoint_s)
    simulator = calculator if args.jobs == 1 else make_calculator
    summary, frames = stability_test(
        starts,
        simulator,
        settings,
        by_system(structures),
        store,
        log=report,
        jobs=args.jobs,
        only=only,
    )
    candidates = candidates_table(frames, threshold, summary["settings"], str(args.model))
    summary.update(
        selected_runs=only,
        spread_threshold=threshold,
        n_candidates=candidates.num_rows,
        model=str(args.model),
        dataset=str(args.dataset),
        device=str(calculator.device),
        trajectory=TRAJECTORY_FILE,
        spread_file=SPREAD_FILE,
        candidates_file=CANDIDATES_FILE,
    )
    summary["units"]["spread_threshold"] = "eV/A"
    write_trajectory(frames, args.out / TRAJECTORY_FILE)
    write_spread_csv(frames, threshold, args.out / SPREAD_FILE)
    provenance = {
        "command": "md",
        "model": str(args.model),
        "dataset": str(args.dataset),
        "spread_threshold": threshold,
        "settings": summary["settings"],
    }
    write_table(candidates, args.out / CANDIDATES_FILE, "configurations", provenance)
    with atomic_path(args.out / MD_FILE) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    for system, values in summary.get("hr_systems", {}).items():
        if values["n_frames"] < MIN_HR_FRAMES or values["n_reference"] < MIN_HR_FRAMES:
            report(
                f"warning: h(r) of {system} from {values['n_frames']} MD frames and "
                f"{values['n_reference']} test structures: a noisy comparison (more --steps, "
                "a smaller --trajectory-interval or more test structures sharpen it)"
            )
    hr = summary.get("hr_mae")
    spread = summary.get("force_spread_max")
    print(
        f"{summary['n_stable']}/{summary['n_runs']} runs stable for {settings.steps} steps "
        f"({settings.steps * settings.timestep / 1000:g} ps), "
        f"{summary['steps_per_s'] or 0:.0f} steps/s, h(r) MAE "
        f"{'n/a' if hr is None else f'{hr:.3f}'}"
        + ("" if spread is None else f", force spread up to {spread:.3f} eV/A")
        + ("" if threshold is None else f", {candidates.num_rows} candidates")
        + f" -> {args.out / MD_FILE}"
    )
    return 0
