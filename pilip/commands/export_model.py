"""``pilip export-model``: a pilip checkpoint as another program's model file.

``--format mace``: a MACE checkpoint (``pilip train --model mace``) as the pickled
``mace.modules.ScaleShiftMACE`` that mace-torch's own tools read: ``MACECalculator(
model_paths=OUT)``, ``mace_create_lammps_model OUT`` and openmm-ml's ``MLPotential("mace",
modelPath=OUT)``. The per-element energies become the model's atomic energies and pilip's
output scale its scale, so it gives the same total energies and forces as pilip. A checkpoint
whose network alone is not the potential (Delta: baseline + network) cannot be exported.

``--format torchscript``: a plain model (any architecture that traces) for one molecule, the
atoms of ``--structure FILE`` in its order, as a TorchScript module from positions (nm) to
the energy (kJ/mol): openmm-torch's ``TorchForce`` (docs/md_engines.md).
"""

from __future__ import annotations

import argparse

HELP = "export a checkpoint for another program (mace: mace-torch, LAMMPS; torchscript)"
FORMATS = ("mace", "torchscript")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="pilip checkpoint (model.pt)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    parser.add_argument("-o", "--out", required=True, help="file to write (e.g. model.model)")
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="the exported model's dtype (default float64: per-element energies of ~1e3 eV "
        "summed in float32 lose the meV)",
    )
    parser.add_argument(
        "--structure",
        help="torchscript: a structure file ASE reads (its first frame): the molecule's atoms, "
        "in the order the engine passes positions",
    )


def run(args: argparse.Namespace) -> int:
    from pilip.errors import PilipError
    from pilip.potential.export import export_mace, export_torchscript

    if args.format == "mace":
        path = export_mace(args.model, args.out, dtype=args.dtype)
        print(f"wrote {path}: a mace-torch model (MACECalculator, LAMMPS, OpenMM)")
        return 0
    if not args.structure:
        raise PilipError("--format torchscript needs --structure FILE (the molecule's atoms)")
    from ase.io import read

    try:
        atoms = read(args.structure, index=0)
    except Exception as exc:  # ASE raises many types for unreadable files
        raise PilipError(
            f"--structure {args.structure}: not a structure ASE reads ({exc})"
        ) from None
    export_torchscript(args.model, atoms.numbers.tolist(), args.out)
    print(f"wrote {args.out}: TorchScript, positions (nm) -> energy (kJ/mol), {len(atoms)} atoms")
    return 0
