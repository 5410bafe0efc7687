"""The names of the loss terms: the one registry that the losses, the training settings, the
workflow and the report read (no torch here, so the config schema can use it)."""

ENERGY = "energy"  # MSE of the energy (eV^2; (eV/atom)^2 per atom)
FORCES = "forces"  # MSE of the force components (eV/A)^2, structures with force labels only
PITC = "pitc"  # Taylor-expansion consistency (eV^2; (eV/atom)^2 per atom)
PISC = "pisc"  # spatial (path-independence) consistency (eV^2; (eV/atom)^2 per atom)
TERM_NAMES = (ENERGY, FORCES, PITC, PISC)
WEAK_TERMS = (PITC, PISC)  # label-free: they constrain the model's own surface
TOTAL = "total"  # the weighted sum, logged beside the terms
ALIASES = {"force": FORCES}
WEAK_MODES = ("auto", "fused", "three_calls")  # how PITC and PISC call the model
