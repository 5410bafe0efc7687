"""Reference-method backends, found by name.

Built-ins (``psi4``, ``xtb``) are listed here; any installed package can add its own through
the Python entry-point group ``pilip.backends`` (name = "module:BackendSubclass"), exactly as
pilip's own PySCF backend does in pyproject.toml. Built-in names cannot be shadowed.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from pilip.backends.base import Backend
from pilip.errors import PilipError

ENTRY_POINT_GROUP = "pilip.backends"

BUILTIN: dict[str, str] = {
    "psi4": "pilip.backends.psi4_backend:Psi4Backend",
    "xtb": "pilip.backends.xtb_backend:XTBBackend",
}


def available_backends() -> dict[str, str]:
    """Backend name -> "module:attribute" for the built-ins and every installed entry point."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    found.update(BUILTIN)
    return dict(sorted(found.items()))


def get_backend(name: str) -> type[Backend]:
    """The Backend subclass registered as ``name``; PilipError listing the known ones if none."""
    known = available_backends()
    if name not in known:
        raise PilipError(
            f"unknown backend {name!r}; known backends: {', '.join(known)} (a new one is "
            f"registered through the entry-point group {ENTRY_POINT_GROUP!r}, see docs/backends.md)"
        )
    target = known[name]
    module_name, _, attribute = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise PilipError(
            f"backend {name!r} ({target}) cannot be loaded: {exc}; install the package that "
            "provides it (for pyscf: pip install 'pilip[pyscf]')"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise PilipError(
            f"backend {name!r} ({target}) is not a subclass of pilip.backends.base.Backend; "
            "fix the entry point of the package that registers it"
        )
    return cls


def make_backend(reference: str, spec: dict[str, Any]) -> Backend:
    """Instantiate the backend of one ``references.<reference>`` config entry (no QM yet)."""
    if "backend" not in spec:
        raise PilipError(
            f"references.{reference}.backend is missing; set it to one of "
            f"{', '.join(available_backends())}"
        )
    return get_backend(str(spec["backend"]))(reference, spec)


__all__ = ["Backend", "ENTRY_POINT_GROUP", "available_backends", "get_backend", "make_backend"]
