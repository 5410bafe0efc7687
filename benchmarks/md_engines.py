"""MD steps per second of one pilip model in ASE and in OpenMM (openmm-ml's ASE route), side by
side in one run, on one CPU thread; and the model alone (energy and forces) eager and traced.

Ethanol (9 atoms) at 300 K, Langevin, 0.5 fs. Modes, each timed over ``--steps`` steps after
20 warm-up steps, repeated ``--repeats`` times in turn, median reported:

  ase              ase.md.langevin.Langevin with PilipCalculator (what `pilip md` runs)
  openmm-reference OpenMM LangevinMiddleIntegrator, Reference platform, MLPotential('ase')
  openmm-cpu       the same on the CPU platform with Threads=1
  model-eager      PilipCalculator.calculate alone (one energy + forces), calls per second
  model-traced     the export_torchscript module's energy + autograd forces, calls per second
  delta-openmm     openmm-reference with the same network as a Delta model over GFN2-xTB
  delta-eager      model-eager for that Delta model (tblite runs at every call)

The Delta modes run only where tblite is installed.

    OMP_NUM_THREADS=1 python -m benchmarks.md_engines --out benchmarks/out/md_engines
    OMP_NUM_THREADS=1 python -m benchmarks.md_engines --checkpoint models/weak/model.pt
    OMP_NUM_THREADS=1 python -m benchmarks.md_engines --out DIR --smoke   # a tiny run (tests)

Without --checkpoint, untrained PaiNNs of two sizes (the class defaults, F=128 x 3
interactions, and config.yaml's demo size, F=32 x 2), float32, are timed: the step cost does
not depend on the weights. Writes DIR/md_engines.json and DIR/md_engines.md. Needs pilip[openmm].
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import openmm
import torch
from ase import units
from ase.build import molecule
from ase.md.langevin import Langevin
from openmm import app, unit
from openmmml import MLPotential

from pilip.potential.calculator import PilipCalculator
from pilip.potential.checkpoint import save_checkpoint
from pilip.potential.export import export_torchscript
from pilip.potential.models import build_model
from pilip.units import NM_TO_ANGSTROM

SIZES = {"painn F=128 x3": (128, 3), "painn F=32 x2": (32, 2)}
WARMUP = 20
TEMPERATURE = 300.0  # K
TIMESTEP = 0.5  # fs
FRICTION = 1.0  # 1/ps


def untrained(path: Path, n_features: int, n_interactions: int, recipes=None) -> Path:
    torch.manual_seed(0)
    model = build_model(
        "painn", n_features=n_features, n_interactions=n_interactions, dtype="float32"
    )
    for z, shift in ((1, -13.6), (6, -1029.0), (8, -2040.0)):
        model.energy_shift.shift[z] = shift
    meta = {"elements": [1, 6, 8], **({"recipes": recipes} if recipes else {})}
    save_checkpoint(path, model=model, model_name="painn", meta=meta)
    return path


def delta_over_xtb(path: Path) -> Path | None:
    """The checkpoint at ``path`` as a Delta model over GFN2-xTB (None without tblite)."""
    try:
        import tblite  # noqa: F401
    except ImportError:
        return None
    from pilip.potential.baselines import resolve_baseline

    payload = torch.load(path, weights_only=True)
    spec = resolve_baseline("gfn2-xtb").specification()
    payload["meta"]["recipes"] = [{"name": "delta", "baseline": spec}]
    delta = path.with_name(path.stem + "_delta.pt")
    torch.save(payload, delta)
    return delta


def ase_md(checkpoint: Path):
    atoms = molecule("CH3CH2OH")
    atoms.calc = PilipCalculator(checkpoint, device="cpu")
    dyn = Langevin(
        atoms, TIMESTEP * units.fs, temperature_K=TEMPERATURE, friction=FRICTION / (1000 * units.fs)
    )
    return dyn.run


def openmm_md(checkpoint: Path, platform_name: str):
    atoms = molecule("CH3CH2OH")
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for i, z in enumerate(atoms.numbers):
        topology.addAtom(f"A{i}", app.Element.getByAtomicNumber(int(z)), residue)
    calculator = PilipCalculator(checkpoint, device="cpu")
    system = MLPotential("ase").createSystem(topology, calculator=calculator)
    integrator = openmm.LangevinMiddleIntegrator(
        TEMPERATURE * unit.kelvin, FRICTION / unit.picosecond, TIMESTEP * unit.femtosecond
    )
    properties = {"Threads": "1"} if platform_name == "CPU" else {}
    platform_ = openmm.Platform.getPlatformByName(platform_name)
    context = openmm.Context(system, integrator, platform_, properties)
    context.setPositions(atoms.positions * unit.angstrom)
    context.setVelocitiesToTemperature(TEMPERATURE * unit.kelvin, 1)

    def steps(n: int) -> None:
        integrator.step(n)
        positions = context.getState(getPositions=True).getPositions(asNumpy=True)
        assert np.isfinite(positions._value).all()

    return steps


def model_eager(checkpoint: Path):
    atoms = molecule("CH3CH2OH")
    calculator = PilipCalculator(checkpoint, device="cpu")

    def calls(n: int) -> None:
        for _ in range(n):
            # a new geometry every call, as in MD (a Delta model's baseline cache never hits)
            atoms.positions[0, 0] += 1e-6
            calculator.calculate(atoms, ["energy", "forces"])

    return calls


def model_traced(checkpoint: Path, folder: Path):
    atoms = molecule("CH3CH2OH")
    module = export_torchscript(checkpoint, atoms.numbers, folder / "model.ts")
    positions = torch.tensor(atoms.positions / NM_TO_ANGSTROM)

    def calls(n: int) -> None:
        for _ in range(n):
            p = positions.clone().requires_grad_(True)
            torch.autograd.grad(module(p), p)

    return calls


def rate(run, steps: int) -> float:
    start = time.perf_counter()
    run(steps)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="time this model instead")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/md_engines"))
    parser.add_argument("--smoke", action="store_true", help="a few steps, one repeat (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.repeats = 3, 1
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    models = (
        {str(args.checkpoint): args.checkpoint}
        if args.checkpoint
        else {
            name: untrained(args.out / f"painn_{f}x{n}.pt", f, n) for name, (f, n) in SIZES.items()
        }
    )
    results = {}
    for name, checkpoint in models.items():
        modes = {
            "ase": ase_md(checkpoint),
            "openmm-reference": openmm_md(checkpoint, "Reference"),
            "openmm-cpu": openmm_md(checkpoint, "CPU"),
            "model-eager": model_eager(checkpoint),
            "model-traced": model_traced(checkpoint, args.out),
        }
        delta = delta_over_xtb(checkpoint)
        if delta is not None:
            modes["delta-openmm"] = openmm_md(delta, "Reference")
            modes["delta-eager"] = model_eager(delta)
        for run in modes.values():
            run(WARMUP)
        rates: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(args.repeats):  # in turn, so that a busy machine slows every mode alike
            for mode, run in modes.items():
                rates[mode].append(rate(run, args.steps))
        results[name] = {mode: statistics.median(r) for mode, r in rates.items()}
        print(name, {mode: round(r, 1) for mode, r in results[name].items()}, flush=True)
    environment = {
        "torch": torch.__version__,
        "openmm": openmm.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "repeats": args.repeats,
    }
    (args.out / "md_engines.json").write_text(
        json.dumps({"environment": environment, "steps_per_s": results}, indent=2)
    )
    header = "| model | " + " | ".join(next(iter(results.values()))) + " |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r:.0f}" for r in row.values()) + " |")
    (args.out / "md_engines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    assert all(np.isfinite(r) for row in results.values() for r in row.values())


if __name__ == "__main__":
    main()
