"""The reference side: labelling, backends (Psi4, xTB, PySCF, plug-ins), CBS arithmetic, the Psi4
worker and its interpreter."""
