"""Stable import path for plug-ins (``pilip.backends.base.Backend``): see
:mod:`pilip.reference.backends.base`."""

from pilip.reference.backends.base import *  # noqa: F403
from pilip.reference.backends.base import Backend  # noqa: F401
