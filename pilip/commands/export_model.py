"""``pilip export-model``: a pilip checkpoint as another program's model file.

``--format mace``: a MACE checkpoint (``pilip train --model mace``) as the pickled
``mace.modules.ScaleShiftMACE`` that mace-torch's own tools read: ``MACECalculator(
model_paths=OUT)``, ``mace_create_lammps_model OUT`` and openmm-ml's ``MLPotential("mace",
modelPath=OUT)``. The per-element energies become the model's atomic energies and pilip's
output scale its scale, so it gives the same total energies and forces as pilip. A checkpoint
whose network alone is not the potential (Delta: baseline + network) cannot be exported.
"""

from __future__ import annotations

import argparse

HELP = "export a checkpoint for another program (--format mace: mace-torch, LAMMPS, OpenMM)"
FORMATS = ("mace",)


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


def run(args: argparse.Namespace) -> int:
    from pilip.potential.export import export_mace

    path = export_mace(args.model, args.out, dtype=args.dtype)
    print(f"wrote {path}: a mace-torch model (MACECalculator, LAMMPS, OpenMM)")
    return 0
