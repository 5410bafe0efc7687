"""Reference-method backends, found by name.

Built-ins (``psi4``, ``xtb``) are listed here; any installed package can add its own through
the Python entry-point group ``pilip.backends`` (name = "module:BackendSubclass"), exactly as
pilip's own PySCF backend does in pyproject.toml. Built-in names cannot be shadowed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from pilip.errors import PilipError
from pilip.reference.backends.base import Backend
from pilip.reference.backends.xtb_backend import METHODS as XTB_METHODS

ENTRY_POINT_GROUP = "pilip.backends"

BUILTIN: dict[str, str] = {
    "psi4": "pilip.reference.backends.psi4_backend:Psi4Backend",
    "xtb": "pilip.reference.backends.xtb_backend:XTBBackend",
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
            f"backend {name!r} ({target}) is not a subclass of "
            "pilip.reference.backends.base.Backend; "
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


def check_reference_spec(reference: str, spec: Mapping[str, Any]) -> None:
    """Validate one ``references.<reference>`` entry: backend known, method parsed, options.

    Runs no calculation and needs no quantum-chemistry program (the Psi4 interpreter, tblite,
    ...): what the backend's constructor checks. PilipError naming the key otherwise.
    """
    make_backend(reference, dict(spec))


# Config keys that name a reference: (key path, the section's on/off switch or None, inline
# names allowed). A key absent from the config (or null) is not checked.
REFERENCE_KEYS: tuple[tuple[tuple[str, ...], str | None, bool], ...] = (
    (("labelling", "reference"), None, False),
    (("force_validation", "reference"), "enabled", False),
    (("training", "baseline"), None, True),
    (("cheap_level", "reference"), "enabled", True),
)
# inline tight-binding names (pilip label/train run them without a config): xtb's own table
INLINE_REFERENCES = tuple(XTB_METHODS)


def check_reference_names(
    config: Mapping[str, Any], given: Mapping[str, Any] | None = None
) -> None:
    """Every reference entry is valid and every key that names a reference names one.

    ``given`` is the config as written, before defaults: only names the user wrote are
    checked (a label-only config need not define the default study's ``mp2_dz``), including
    training variants' overrides of a checked training key.
    """
    import difflib

    references = config.get("references") or {}
    for name, spec in references.items():
        check_reference_spec(name, spec)
    given = config if given is None else given
    for path, switch, inline in REFERENCE_KEYS:
        section, written = config.get(path[0]), given.get(path[0])
        if not isinstance(section, Mapping) or not isinstance(written, Mapping):
            continue
        if switch is not None and not section.get(switch, True):
            continue
        candidates = [(".".join(path), written[path[1]])] if path[1] in written else []
        for variant, overrides in (written.get("variants") or {}).items():
            if isinstance(overrides, Mapping) and path[1] in overrides:
                key = f"{path[0]}.variants.{variant}.{path[1]}"
                candidates.append((key, overrides[path[1]]))
        for key, name in candidates:
            if name is None or name in references:
                continue
            if inline and str(name).lower() in INLINE_REFERENCES:
                continue
            pool = list(references) + (list(INLINE_REFERENCES) if inline else [])
            close = difflib.get_close_matches(str(name), pool, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise PilipError(
                f"{key}: {name!r} is not a name in `references` ({hint}known: "
                f"{', '.join(pool) or 'none'}); add it to references or fix the name"
            )


__all__ = [
    "Backend",
    "ENTRY_POINT_GROUP",
    "available_backends",
    "check_reference_names",
    "check_reference_spec",
    "get_backend",
    "make_backend",
]
