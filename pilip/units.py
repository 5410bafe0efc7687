"""Units, declared once. Public boundaries use Angstrom and eV (ASE convention).

Hartree and Bohr appear only inside the Psi4 worker and in component-energy columns whose
field metadata says so. The values are CODATA 2014, the same as ASE's defaults and Psi4 1.3.
"""

from ase import units as _ase_units

HARTREE_TO_EV: float = float(_ase_units.Hartree)  # eV per Hartree
BOHR_TO_ANGSTROM: float = float(_ase_units.Bohr)  # Angstrom per Bohr
HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM: float = HARTREE_TO_EV / BOHR_TO_ANGSTROM
EV_TO_MEV: float = 1000.0
# OpenMM speaks kJ/mol and nm; openmm-ml's ASE route converts with ASE's (CODATA 2014) factor,
# so pilip does too: CODATA 2018's 96.485332123 differs by 8e-9 relative (3e-5 eV on 4000 eV)
EV_TO_KJ_PER_MOL: float = float(1.0 / (_ase_units.kJ / _ase_units.mol))  # kJ/mol per eV
NM_TO_ANGSTROM: float = 10.0

ENERGY = "eV"
FORCE = "eV/A"
LENGTH = "A"
HARTREE = "Eh"
