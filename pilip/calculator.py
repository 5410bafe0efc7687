"""Stable import path for the ASE calculator: ``from pilip.calculator import PilipCalculator``
(the code lives in :mod:`pilip.potential.calculator`)."""

from pilip.potential.calculator import PilipCalculator  # noqa: F401
