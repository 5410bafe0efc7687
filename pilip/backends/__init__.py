"""Stable import path for plug-ins: the backends live in :mod:`pilip.reference.backends`."""

from pilip.reference.backends import *  # noqa: F403
from pilip.reference.backends import ENTRY_POINT_GROUP  # noqa: F401
