"""pilip: interatomic potentials from energy-only quantum chemistry and physics-informed
weak losses."""

__version__ = "0.1.0"
