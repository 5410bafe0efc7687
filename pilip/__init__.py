"""pilip: interatomic potentials from energy-only quantum chemistry with physics-informed weak losses."""

__version__ = "0.1.0"
