"""``pilip md MODEL DATASET --out DIR``: Langevin NVT stability test of a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pilip.potential.md import MDSettings

HELP = "MD stability test: Langevin NVT from test configurations, stops when a bond breaks"

MD_FILE = "md.json"
TRAJECTORY_FILE = "md.extxyz"
# options that map one to one onto pilip.potential.md.MDSettings fields
SETTINGS = (
    "temperature",
    "timestep",
    "steps",
    "friction",
    "bond_threshold",
    "seed",
    "trajectory_interval",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults (None here) come from pilip.potential.md.MDSettings, the same as the config schema's.
    parser.add_argument("model", type=Path, help="checkpoint written by pilip train (model.pt)")
    parser.add_argument("dataset", type=Path, help="dataset table; MD starts from its test split")
    parser.add_argument(
        "--out", "-o", type=Path, required=True, help="folder for md.json and md.extxyz"
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
    parser.add_argument("--seed", type=int, help="random seed of run 0 (default 0)")
    parser.add_argument(
        "--trajectory-interval", type=int, help="steps between saved frames (default 10)"
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
    for flag, value in positive.items():
        if value <= 0:
            raise PilipError(f"{flag} {value}: use a positive number")
    for flag, value in {
        "--temperature": settings.temperature,
        "--friction": settings.friction,
    }.items():
        if value < 0:
            raise PilipError(f"{flag} {value}: use a number >= 0")
    return settings


def run(args: argparse.Namespace) -> int:
    import json

    from pilip.atomic_io import atomic_path
    from pilip.potential.calculator import PilipCalculator
    from pilip.potential.md import select_starts, stability_test, write_trajectory

    settings = settings_from_args(args)
    starts = select_starts(args.dataset, args.starts)
    calculator = PilipCalculator(args.model, device=args.device)
    summary, frames = stability_test(starts, calculator, settings)
    summary.update(
        model=str(args.model),
        dataset=str(args.dataset),
        device=str(calculator.device),
        trajectory=TRAJECTORY_FILE,
    )
    write_trajectory(frames, args.out / TRAJECTORY_FILE)
    with atomic_path(args.out / MD_FILE) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{summary['n_stable']}/{summary['n_runs']} runs stable for {settings.steps} steps "
        f"({settings.steps * settings.timestep / 1000:g} ps) -> {args.out / MD_FILE}"
    )
    return 0
