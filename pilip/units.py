"""Units, declared once. Public boundaries use Angstrom and eV (ASE convention).

Hartree and Bohr appear only inside the Psi4 worker and in component-energy columns whose
field metadata says so. The values are CODATA 2014, the same as ASE's defaults and Psi4 1.3.
"""

from ase import units as _ase_units

HARTREE_TO_EV: float = float(_ase_units.Hartree)  # eV per Hartree
BOHR_TO_ANGSTROM: float = float(_ase_units.Bohr)  # Angstrom per Bohr
HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM: float = HARTREE_TO_EV / BOHR_TO_ANGSTROM
EV_TO_MEV: float = 1000.0

ENERGY = "eV"
FORCE = "eV/A"
LENGTH = "A"
HARTREE = "Eh"
