"""Complete-basis-set (CBS) arithmetic: pilip's own, checked against Psi4's ``cbs()``.

A *recipe* is a list of stages, as in Psi4's ``cbs()``:

* ``scf``: the Hartree-Fock total energy, one basis or extrapolated over 2-3 bases;
* ``corl``: a correlation energy ``E(method) - E(hf)``, one basis or extrapolated over two;
* ``delta1``, ``delta2``, ...: corrections ``E(method) - E(lesser)``, e.g. CCSD(T) - MP2 in
  a small basis on top of an MP2/CBS correlation energy.

The recipe's total is ``scf + corl + delta1 + ...``. Every stage works on *total* energies
``T[(method, basis)]`` in Hartree, exactly the way Psi4 1.3.2 does, so the same inputs give
Psi4's number. Stored components (see ``component_name``) are the SCF energy per basis and
each method's correlation energy per basis; ``totals_from_components`` turns them back.

Psi4 1.3.2 facts this module reproduces or corrects:

* ``mp2/cc-pv[dt]z`` extrapolates only the correlation energy; its SCF part is the
  cc-pVTZ (largest basis) value, not extrapolated. Ask for ``scf: {basis: cc-pv[dt]z}``
  in a composite recipe to extrapolate the SCF energy too.
* Psi4's ``scf_xtpl_karton_2`` divides by ``exp(-a) * (exp(sqrt(zHI)) - exp(sqrt(zLO)))``,
  which is not the Karton-Martin formula; pilip's ``scf_xtpl_karton_2`` is the published one
  ``E(X) = E_inf + B exp(-a sqrt(X))`` and so differs from Psi4's on purpose.
* Within one basis, Psi4 reads every lesser method from the most complete calculation (the
  MP2 energy of a delta correction comes out of the CCSD(T) run), see ``plan_jobs``.

DFT functionals Psi4 knows (``b3lyp/cc-pvdz``, ``wb97x-d/def2-svp``; the names of
``pilip.reference.backends.psi4_functionals``) are one-stage recipes: one basis, no extrapolation,
the
total stored as the component ``<functional>/<basis>``.

Only the standard library is used here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pilip.errors import PilipError
from pilip.reference.backends.psi4_functionals import FUNCTIONALS

# --- extrapolation formulas -------------------------------------------------------------------
# Each takes the cardinal numbers X (2 = D, 3 = T, ...) and the energies (Hartree) in
# increasing X, plus an optional exponent, and returns the extrapolated energy (Hartree).


def xtpl_highest_1(zetas: Sequence[int], values: Sequence[float], alpha: float | None = None):
    """No extrapolation: the value of the (single, or largest) basis."""
    return values[-1]


def scf_xtpl_helgaker_2(
    zetas: Sequence[int], values: Sequence[float], alpha: float | None = None
) -> float:
    """Exponential two-point SCF form ``E(X) = E_inf + B exp(-a X)``, a = 1.63 by default.

    Halkier, Helgaker, Jorgensen, Klopper, Olsen, Chem. Phys. Lett. 302, 437 (1999).
    """
    (z_lo, z_hi), (e_lo, e_hi) = zetas, values
    alpha = 1.63 if alpha is None else alpha
    beta_division = 1 / (math.exp(-1 * alpha * z_lo) * (math.exp(-1 * alpha) - 1))
    beta_mult = math.exp(-1 * alpha * z_hi)
    beta = (e_hi - e_lo) * beta_division
    return e_hi - beta * beta_mult


def scf_xtpl_truhlar_2(
    zetas: Sequence[int], values: Sequence[float], alpha: float | None = None
) -> float:
    """Power two-point SCF form ``E(X) = E_inf + B X^-a``, a = 3.4 by default.

    Truhlar, Chem. Phys. Lett. 294, 45 (1998).
    """
    (z_lo, z_hi), (e_lo, e_hi) = zetas, values
    alpha = 3.40 if alpha is None else alpha
    beta_division = 1 / (z_hi ** (-1 * alpha) - z_lo ** (-1 * alpha))
    beta_mult = z_hi ** (-1 * alpha)
    beta = (e_hi - e_lo) * beta_division
    return e_hi - beta * beta_mult


def scf_xtpl_karton_2(
    zetas: Sequence[int], values: Sequence[float], alpha: float | None = None
) -> float:
    """Root-exponential two-point SCF form ``E(X) = E_inf + B exp(-a sqrt(X))``, a = 6.3.

    Karton, Martin, Theor. Chem. Acc. 115, 330 (2006). Not Psi4 1.3.2's function of the same
    name, whose denominator is wrong (see the module docstring).
    """
    (z_lo, z_hi), (e_lo, e_hi) = zetas, values
    alpha = 6.30 if alpha is None else alpha
    f_lo = math.exp(-alpha * math.sqrt(z_lo))
    f_hi = math.exp(-alpha * math.sqrt(z_hi))
    beta = (e_hi - e_lo) / (f_hi - f_lo)
    return e_hi - beta * f_hi


def scf_xtpl_helgaker_3(
    zetas: Sequence[int], values: Sequence[float], alpha: float | None = None
) -> float:
    """Exponential three-point SCF form ``E(X) = E_inf + B exp(-a X)`` with a fitted.

    Needs consecutive X. Halkier et al., Chem. Phys. Lett. 302, 437 (1999); Feller (1992).
    """
    (_, z_md, z_hi), (e_lo, e_md, e_hi) = zetas, values
    ratio = (e_hi - e_md) / (e_md - e_lo)
    if ratio <= 0:
        # Psi4 would take log of a negative number here: the three energies are not monotonic
        raise ValueError(
            f"scf_xtpl_helgaker_3 needs monotonic energies, got {e_lo!r}, {e_md!r}, {e_hi!r}"
        )
    fitted = -1 * math.log(ratio)
    beta = (e_hi - e_md) / (math.exp(-1 * fitted * z_md) * (ratio - 1))
    return e_hi - beta * math.exp(-1 * fitted * z_hi)


def corl_xtpl_helgaker_2(
    zetas: Sequence[int], values: Sequence[float], alpha: float | None = None
) -> float:
    """Two-point correlation form ``E(X) = E_inf + B X^-a``, a = 3 by default.

    Helgaker, Klopper, Koch, Noga, J. Chem. Phys. 106, 9639 (1997); Halkier et al.,
    Chem. Phys. Lett. 286, 243 (1998).
    """
    (z_lo, z_hi), (e_lo, e_hi) = zetas, values
    alpha = 3.0 if alpha is None else alpha
    return (e_hi * z_hi**alpha - e_lo * z_lo**alpha) / (z_hi**alpha - z_lo**alpha)


@dataclass(frozen=True)
class Scheme:
    """An extrapolation formula: how many bases it takes and which stages may use it."""

    function: Callable[..., float]
    n_points: int
    treatments: tuple[str, ...]  # "scf" and/or "corl"
    linear: bool  # linear in the energies, so gradients extrapolate the same way


SCHEMES: dict[str, Scheme] = {
    "xtpl_highest_1": Scheme(xtpl_highest_1, 1, ("scf", "corl"), True),
    "scf_xtpl_helgaker_2": Scheme(scf_xtpl_helgaker_2, 2, ("scf",), True),
    "scf_xtpl_truhlar_2": Scheme(scf_xtpl_truhlar_2, 2, ("scf",), True),
    "scf_xtpl_karton_2": Scheme(scf_xtpl_karton_2, 2, ("scf",), True),
    "scf_xtpl_helgaker_3": Scheme(scf_xtpl_helgaker_3, 3, ("scf",), False),
    "corl_xtpl_helgaker_2": Scheme(corl_xtpl_helgaker_2, 2, ("corl",), True),
}


def default_scheme(n_bases: int, treatment: str) -> str:
    """Psi4's default formula for a stage with ``n_bases`` bases (``_get_default_xtpl``)."""
    if n_bases == 1:
        return "xtpl_highest_1"
    if treatment == "scf" and n_bases in (2, 3):
        return f"scf_xtpl_helgaker_{n_bases}"
    if treatment == "corl" and n_bases == 2:
        return "corl_xtpl_helgaker_2"
    raise PilipError(
        f"no extrapolation of a {treatment} energy over {n_bases} basis sets; use 2 basis "
        "sets (e.g. cc-pv[tq]z) for correlation, 2 or 3 for SCF"
    )


# --- methods ----------------------------------------------------------------------------------
# Which total energies (Psi4 variable names) one calculation of a method provides. From Psi4
# 1.3.2's VARH table (driver_cbs.return_energy_components), for the methods pilip supports.
METHOD_PROVIDES: dict[str, dict[str, str]] = {
    "hf": {"hf": "HF TOTAL ENERGY"},
    "mp2": {"hf": "HF TOTAL ENERGY", "mp2": "MP2 TOTAL ENERGY"},
    "mp2.5": {
        "hf": "HF TOTAL ENERGY",
        "mp2": "MP2 TOTAL ENERGY",
        "mp2.5": "MP2.5 TOTAL ENERGY",
        "mp3": "MP3 TOTAL ENERGY",
    },
    "mp3": {
        "hf": "HF TOTAL ENERGY",
        "mp2": "MP2 TOTAL ENERGY",
        "mp2.5": "MP2.5 TOTAL ENERGY",
        "mp3": "MP3 TOTAL ENERGY",
    },
    "mp4(sdq)": {
        "hf": "HF TOTAL ENERGY",
        "mp2": "MP2 TOTAL ENERGY",
        "mp2.5": "MP2.5 TOTAL ENERGY",
        "mp3": "MP3 TOTAL ENERGY",
        "mp4(sdq)": "MP4(SDQ) TOTAL ENERGY",
    },
    "mp4": {
        "hf": "HF TOTAL ENERGY",
        "mp2": "MP2 TOTAL ENERGY",
        "mp2.5": "MP2.5 TOTAL ENERGY",
        "mp3": "MP3 TOTAL ENERGY",
        "mp4(sdq)": "MP4(SDQ) TOTAL ENERGY",
        "mp4": "MP4 TOTAL ENERGY",
    },
    "omp2": {"hf": "HF TOTAL ENERGY", "mp2": "MP2 TOTAL ENERGY", "omp2": "OMP2 TOTAL ENERGY"},
    "omp3": {
        "hf": "HF TOTAL ENERGY",
        "mp2": "MP2 TOTAL ENERGY",
        "mp3": "MP3 TOTAL ENERGY",
        "omp3": "OMP3 TOTAL ENERGY",
    },
    "lccd": {"hf": "HF TOTAL ENERGY", "mp2": "MP2 TOTAL ENERGY", "lccd": "LCCD TOTAL ENERGY"},
    "cepa(0)": {
        "hf": "HF TOTAL ENERGY",
        "mp2": "MP2 TOTAL ENERGY",
        "cepa(0)": "CEPA(0) TOTAL ENERGY",
    },
    "cc2": {"hf": "HF TOTAL ENERGY", "mp2": "MP2 TOTAL ENERGY", "cc2": "CC2 TOTAL ENERGY"},
    "ccsd": {"hf": "HF TOTAL ENERGY", "mp2": "MP2 TOTAL ENERGY", "ccsd": "CCSD TOTAL ENERGY"},
    "ccsd(t)": {
        "hf": "HF TOTAL ENERGY",
        "mp2": "MP2 TOTAL ENERGY",
        "ccsd": "CCSD TOTAL ENERGY",
        "ccsd(t)": "CCSD(T) TOTAL ENERGY",
    },
    "fno-ccsd(t)": {
        "hf": "HF TOTAL ENERGY",
        "mp2": "MP2 TOTAL ENERGY",
        "fno-ccsd": "CCSD TOTAL ENERGY",
        "fno-ccsd(t)": "CCSD(T) TOTAL ENERGY",
    },
    "qcisd": {
        "hf": "HF TOTAL ENERGY",
        "mp2": "MP2 TOTAL ENERGY",
        "mp2.5": "MP2.5 TOTAL ENERGY",
        "mp3": "MP3 TOTAL ENERGY",
        "mp4(sdq)": "MP4(SDQ) TOTAL ENERGY",
        "qcisd": "QCISD TOTAL ENERGY",
    },
    "qcisd(t)": {
        "hf": "HF TOTAL ENERGY",
        "mp2": "MP2 TOTAL ENERGY",
        "mp2.5": "MP2.5 TOTAL ENERGY",
        "mp3": "MP3 TOTAL ENERGY",
        "mp4(sdq)": "MP4(SDQ) TOTAL ENERGY",
        "qcisd": "QCISD TOTAL ENERGY",
        "qcisd(t)": "QCISD(T) TOTAL ENERGY",
    },
    "cisd": {"hf": "HF TOTAL ENERGY", "cisd": "CISD TOTAL ENERGY"},
    "fci": {"hf": "HF TOTAL ENERGY", "fci": "FCI TOTAL ENERGY"},
}
METHOD_ALIASES = {"scf": "hf"}  # Psi4's "scf" is Hartree-Fock for the methods supported here
DFT_ENERGY_VARIABLE = "CURRENT ENERGY"  # what psi4.energy returns: functional + dispersion
# the functionals a user most likely means, for the error message of an unknown method
COMMON_FUNCTIONALS = ("b3lyp", "pbe0", "wb97x-d", "b3lyp-d3bj", "pbe", "tpss")


def is_functional(method: str) -> bool:
    """True for a (canonical) DFT functional name Psi4 1.3.2 knows, e.g. ``b3lyp-d3bj``."""
    return method not in METHOD_PROVIDES and method in FUNCTIONALS


def canonical_method(method: str) -> str:
    """Lower-case method name with aliases resolved (``SCF`` -> ``hf``); raise if unknown.

    Wavefunction methods of ``METHOD_PROVIDES`` and Psi4's DFT functionals are known.
    """
    name = method.strip().lower()
    name = METHOD_ALIASES.get(name, name)
    if name not in METHOD_PROVIDES and name not in FUNCTIONALS:
        import difflib

        close = difflib.get_close_matches(name, [*METHOD_PROVIDES, *FUNCTIONALS], n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        known = ", ".join(["scf", *METHOD_PROVIDES])
        raise PilipError(
            f"unknown method {method!r}; {hint}supported: {known}, or a DFT functional Psi4 "
            f"knows ({', '.join(COMMON_FUNCTIONALS)}, ...)"
        )
    return name


def provides(method: str) -> dict[str, str]:
    """method -> Psi4 variable of every total energy one calculation of ``method`` yields."""
    if is_functional(method):
        return {method: DFT_ENERGY_VARIABLE}
    return METHOD_PROVIDES[method]


def component_name(method: str, basis: str) -> str:
    """Stored component name (Hartree): ``scf/<basis>``, ``<method>_corl/<basis>`` or, for a
    DFT functional, its total ``<functional>/<basis>``."""
    if method == "hf":
        return f"scf/{basis}"
    return f"{method}/{basis}" if is_functional(method) else f"{method}_corl/{basis}"


def components_from_totals(totals: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """Components (SCF per basis, correlation per method and basis, DFT totals) from totals."""
    out: dict[str, float] = {}
    for (method, basis), value in totals.items():
        if method == "hf" or is_functional(method):
            out[component_name(method, basis)] = value
        elif ("hf", basis) in totals:
            out[component_name(method, basis)] = value - totals[("hf", basis)]
    return out


def totals_from_components(components: Mapping[str, float]) -> dict[tuple[str, str], float]:
    """Total energies ``T[(method, basis)]`` from stored components (inverse of the above)."""
    totals: dict[tuple[str, str], float] = {}
    for name, value in components.items():
        kind, _, basis = name.partition("/")
        if kind == "scf":
            totals[("hf", basis)] = value
        elif is_functional(kind):
            totals[(kind, basis)] = value
    for name, value in components.items():
        kind, _, basis = name.partition("/")
        if kind.endswith("_corl") and ("hf", basis) in totals:
            totals[(kind[: -len("_corl")], basis)] = totals[("hf", basis)] + value
    return totals


# --- basis-set series -------------------------------------------------------------------------
_ZETA_LETTERS = "dtq5678"
_BRACKET = re.compile(r"^(?P<pre>[^\[\]]*)\[(?P<zeta>[^\[\]]*)\](?P<post>[^\[\]]*)$")


def expand_basis(basis: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``cc-pv[dt]z`` -> ``(("cc-pvdz", "cc-pvtz"), (2, 3))``; a plain name has cardinal 0.

    Follows Psi4's ``_expand_bracketed_basis``: Dunning-style ``[dtq5678]`` or digits, and
    ``def2-[stq]zvp*`` (``s`` counts as double zeta); the cardinal numbers must be
    consecutive. Names are lower-cased.
    """
    text = basis.strip().lower()
    if "[" not in text and "]" not in text:
        return (text,), (0,)
    match = _BRACKET.match(text)
    if not match or not match.group("zeta"):
        raise PilipError(
            f"basis series {basis!r} is not of the form cc-pv[dt]z, aug-cc-pv[tq]z or "
            "def2-[st]zvp (one bracket of consecutive cardinal numbers)"
        )
    pre, post = match.group("pre"), match.group("post")
    is_def2 = pre.startswith("def2-")
    letters = match.group("zeta").replace(",", "")
    zetas: list[int] = []
    for char in letters:
        if is_def2 and char == "s":
            zeta = 2
        elif char in _ZETA_LETTERS:
            zeta = _ZETA_LETTERS.index(char) + 2
        elif char.isdigit() and 2 <= int(char) <= 8:
            zeta = int(char)
        else:
            raise PilipError(f"basis series {basis!r}: {char!r} is not a cardinal number")
        zetas.append(zeta)
    zetas = sorted(set(zetas))
    if any(b - a != 1 for a, b in zip(zetas, zetas[1:], strict=False)):
        raise PilipError(
            f"basis series {basis!r} skips a cardinal number; extrapolations need consecutive "
            "ones (e.g. cc-pv[dt]z, cc-pv[tq]z)"
        )
    names = []
    for zeta in zetas:
        letter = _ZETA_LETTERS[zeta - 2]
        if is_def2 and zeta == 2:
            # def2-[st]zvp: the double-zeta member is def2-svp, not def2-dzvp
            names.append(pre + "s" + post[1:])
        else:
            names.append(pre + letter + post)
    return tuple(names), tuple(zetas)


def _expand(basis: str, where: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``expand_basis`` with errors that name the config key."""
    try:
        return expand_basis(basis)
    except PilipError as exc:
        raise PilipError(f"{where}: {exc}") from None


# --- recipes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe: ``scheme(T[method]) - scheme(T[lesser])`` over its bases."""

    name: str  # scf, corl, delta1, delta2, ... (dft: a functional, the only stage)
    method: str  # canonical method of the upper level (hf for the scf stage)
    lesser: str | None  # canonical method subtracted (None for the scf stage)
    bases: tuple[str, ...]
    zetas: tuple[int, ...]
    scheme: str
    alpha: float | None = None

    @property
    def treatment(self) -> str:
        return "scf" if self.lesser is None else "corl"

    def terms(self) -> list[tuple[int, str]]:
        """(+1 or -1, method) pairs in Psi4's summation order."""
        if self.lesser is None:
            return [(+1, self.method)]
        return [(+1, self.method), (-1, self.lesser)]

    def value(self, totals: Mapping[tuple[str, str], float]) -> float:
        """This stage's contribution in Hartree (``totals`` keyed by (method, basis))."""
        function = SCHEMES[self.scheme].function
        out = 0.0
        for sign, method in self.terms():
            values = [totals[(method, basis)] for basis in self.bases]
            out += sign * function(self.zetas, values, self.alpha)
        return out

    def weights(self) -> dict[tuple[str, str], float]:
        """d(stage)/dT[(method, basis)] of a linear scheme (for gradients)."""
        out: dict[tuple[str, str], float] = {}
        function = SCHEMES[self.scheme].function
        n = len(self.bases)
        for sign, method in self.terms():
            for i, basis in enumerate(self.bases):
                unit = [1.0 if j == i else 0.0 for j in range(n)]
                zero = [0.0] * n
                weight = function(self.zetas, unit, self.alpha) - function(
                    self.zetas, zero, self.alpha
                )
                key = (method, basis)
                out[key] = out.get(key, 0.0) + sign * weight
        return out


@dataclass(frozen=True)
class Recipe:
    """A CBS recipe: the stages whose values add up to the total energy."""

    stages: tuple[Stage, ...]
    label: str  # the method string or a description, for provenance

    def required_totals(self) -> list[tuple[str, str]]:
        """Every (method, basis) total energy the recipe reads, in first-use order."""
        seen: dict[tuple[str, str], None] = {}
        for stage in self.stages:
            for _, method in stage.terms():
                for basis in stage.bases:
                    seen[(method, basis)] = None
        return list(seen)

    def required_components(self) -> list[str]:
        """The stored component names the recipe needs (SCF of every basis it touches)."""
        names: dict[str, None] = {}
        for method, basis in self.required_totals():
            if not is_functional(method):  # a DFT component is a total, not hf + correlation
                names[component_name("hf", basis)] = None
            if method != "hf":
                names[component_name(method, basis)] = None
        return list(names)

    def total(self, totals: Mapping[tuple[str, str], float]) -> float:
        """Total energy in Hartree from total energies ``T[(method, basis)]`` in Hartree."""
        missing = [key for key in self.required_totals() if key not in totals]
        if missing:
            raise KeyError(", ".join(f"{m}/{b}" for m, b in missing))
        final = 0.0
        for stage in self.stages:
            final += stage.value(totals)
        return final

    def total_from_components(self, components: Mapping[str, float]) -> float:
        """Total energy in Hartree from stored components; PilipError names what is missing."""
        missing = [name for name in self.required_components() if name not in components]
        if missing:
            have = ", ".join(sorted(components)) or "none"
            raise PilipError(
                f"recipe {self.label!r} needs energy components {', '.join(missing)}, but the "
                f"row has only: {have}; choose a formula over the stored bases or relabel"
            )
        return self.total(totals_from_components(components))

    @property
    def linear(self) -> bool:
        return all(SCHEMES[stage.scheme].linear for stage in self.stages)

    def gradient_weights(self) -> dict[tuple[str, str], float]:
        """dE/dT[(method, basis)] for a linear recipe; zero weights are left out."""
        if not self.linear:
            raise PilipError(
                f"recipe {self.label!r} uses a non-linear extrapolation (scf_xtpl_helgaker_3), "
                "so pilip cannot form its gradient; use a two-point SCF scheme for gradients"
            )
        out: dict[tuple[str, str], float] = {}
        for stage in self.stages:
            for key, weight in stage.weights().items():
                out[key] = out.get(key, 0.0) + weight
        return {key: w for key, w in out.items() if abs(w) > 1e-12}


def _make_stage(
    name: str,
    method: str,
    lesser: str | None,
    basis: str,
    scheme: str | None,
    alpha: float | None,
    where: str,
) -> Stage:
    bases, zetas = _expand(basis, where)
    treatment = "scf" if lesser is None else "corl"
    if len(bases) > 1 and 0 in zetas:
        raise PilipError(f"{where}: basis series {basis!r} has no cardinal numbers")
    try:
        scheme = scheme or default_scheme(len(bases), treatment)
    except PilipError as exc:
        raise PilipError(f"{where}: {exc}") from None
    if scheme not in SCHEMES:
        known = ", ".join(SCHEMES)
        raise PilipError(f"{where}: unsupported extrapolation {scheme!r}; known: {known}")
    spec = SCHEMES[scheme]
    if treatment not in spec.treatments:
        usable = ", ".join(k for k, v in SCHEMES.items() if treatment in v.treatments)
        raise PilipError(
            f"{where}: {scheme} extrapolates {'/'.join(spec.treatments)} energies, not the "
            f"{treatment} energy of this stage; use one of {usable}"
        )
    if spec.n_points != len(bases):
        raise PilipError(
            f"{where}: {scheme} needs {spec.n_points} basis sets, {basis!r} gives {len(bases)}"
        )
    if alpha is not None and not isinstance(alpha, (int, float)):
        raise PilipError(f"{where}: alpha must be a number, got {alpha!r}")
    return Stage(
        name=name,
        method=method,
        lesser=lesser,
        bases=bases,
        zetas=zetas,
        scheme=scheme,
        alpha=None if alpha is None else float(alpha),
    )


def parse_method_string(text: str, *, where: str = "method") -> Recipe:
    """A Psi4 method string -> recipe with Psi4's own defaults.

    ``scf/cc-pvdz``, ``mp2/cc-pv[dt]z``, ``scf/cc-pv[dtq]z``, ``ccsd(t)/cc-pvdz`` and one
    delta correction ``mp2/cc-pv[tq]z+D:ccsd(t)/cc-pvdz`` (Psi4's ``_cbs_gufunc``): the SCF
    stage of a correlated method is Hartree-Fock in the largest basis, not extrapolated.
    """
    compact = text.strip().lower().replace(" ", "")
    parts = re.split(r"\+(?=d:)", compact)
    if len(parts) > 2:
        raise PilipError(
            f"{where}: {text!r} has more than one '+D:' delta; write a composite `cbs` recipe"
        )
    methods, bases = [], []
    for number, part in enumerate(parts):
        if number > 0:
            part = part[2:]
        if part.count("/") != 1:
            raise PilipError(
                f"{where}: {text!r} must be method/basis, e.g. mp2/cc-pv[dt]z or scf/cc-pvdz"
            )
        method, basis = part.split("/")
        if not method or not basis:
            raise PilipError(f"{where}: {text!r} must be method/basis, e.g. mp2/cc-pv[dt]z")
        try:
            methods.append(canonical_method(method))
        except PilipError as exc:
            raise PilipError(f"{where}: {exc}") from None
        bases.append(basis)

    stages: list[Stage] = []
    if any(is_functional(m) for m in methods):
        if len(methods) > 1:
            raise PilipError(
                f"{where}: {text!r}: a DFT functional takes no '+D:' delta; use one method/basis"
            )
        if len(_expand(bases[0], where)[0]) > 1:
            raise PilipError(
                f"{where}: {text!r}: DFT energies are not extrapolated; give one basis set "
                "(e.g. b3lyp/def2-svp)"
            )
        stages.append(_make_stage("dft", methods[0], None, bases[0], None, None, where))
        return Recipe(stages=tuple(stages), label=text.strip())
    if methods[0] == "hf":
        stages.append(_make_stage("scf", "hf", None, bases[0], None, None, where))
    else:
        corl_bases, _ = _expand(bases[0], where)
        stages.append(_make_stage("scf", "hf", None, corl_bases[-1], None, None, where))
        stages.append(_make_stage("corl", methods[0], "hf", bases[0], None, None, where))
    if len(methods) == 2:
        lesser = stages[-1].method
        stages.append(_make_stage("delta1", methods[1], lesser, bases[1], None, None, where))
    return Recipe(stages=tuple(stages), label=text.strip())


_STAGE_KEYS = {
    "scf": {"basis", "scheme", "alpha"},
    "corl": {"method", "basis", "scheme", "alpha"},
    "delta": {"method", "lesser", "basis", "scheme", "alpha"},
}


def parse_cbs_recipe(spec: Mapping, *, where: str = "cbs") -> Recipe:
    """A composite recipe from a config mapping.

    ``{"scf": {"basis": "cc-pv[tq]z", "scheme": "scf_xtpl_helgaker_2"},``
    `` "corl": {"method": "mp2", "basis": "cc-pv[tq]z"},``
    `` "delta": [{"method": "ccsd(t)", "lesser": "mp2", "basis": "cc-pvdz"}]}``

    Defaults as in Psi4's ``cbs()``: without ``scf`` the SCF energy is taken in the largest
    correlation basis; ``scheme`` follows the number of bases; ``lesser`` is the method of
    the stage before. ``alpha`` overrides the formula's exponent.
    """
    if not isinstance(spec, Mapping):
        raise PilipError(f"{where} must be a mapping with scf/corl/delta stages")
    unknown = set(spec) - {"scf", "corl", "delta"}
    if unknown:
        raise PilipError(f"{where}: unknown key(s) {sorted(unknown)}; use scf, corl, delta")
    if "scf" not in spec and "corl" not in spec:
        raise PilipError(f"{where} needs an `scf` or a `corl` stage")

    def stage_spec(key: str, raw, kind: str) -> Mapping:
        if not isinstance(raw, Mapping):
            raise PilipError(f"{where}.{key} must be a mapping")
        extra = set(raw) - _STAGE_KEYS[kind]
        if extra:
            raise PilipError(
                f"{where}.{key}: unknown key(s) {sorted(extra)}; allowed: "
                f"{', '.join(sorted(_STAGE_KEYS[kind]))}"
            )
        if "basis" not in raw or (kind != "scf" and "method" not in raw):
            need = "basis" if kind == "scf" else "method and basis"
            raise PilipError(f"{where}.{key} needs {need}")
        return raw

    def method_of(raw: Mapping, key: str, field: str) -> str:
        try:
            method = canonical_method(str(raw[field]))
        except PilipError as exc:
            raise PilipError(f"{where}.{key}.{field}: {exc}") from None
        if is_functional(method):
            raise PilipError(
                f"{where}.{key}.{field}: {method!r} is a DFT functional, which takes no CBS "
                f"recipe; write method: {method}/<basis> instead of `cbs`"
            )
        return method

    stages: list[Stage] = []
    corl = stage_spec("corl", spec["corl"], "corl") if "corl" in spec else None
    if "scf" in spec:
        scf = stage_spec("scf", spec["scf"], "scf")
        stages.append(
            _make_stage(
                "scf",
                "hf",
                None,
                str(scf["basis"]),
                scf.get("scheme"),
                scf.get("alpha"),
                f"{where}.scf",
            )
        )
    else:
        largest = _expand(str(corl["basis"]), f"{where}.corl")[0][-1]
        stages.append(_make_stage("scf", "hf", None, largest, None, None, f"{where}.scf"))
    if corl is not None:
        method = method_of(corl, "corl", "method")
        if method == "hf":
            raise PilipError(f"{where}.corl.method: a correlation stage needs a correlated method")
        stages.append(
            _make_stage(
                "corl",
                method,
                "hf",
                str(corl["basis"]),
                corl.get("scheme"),
                corl.get("alpha"),
                f"{where}.corl",
            )
        )
    deltas = spec.get("delta", [])
    if isinstance(deltas, Mapping):
        deltas = [deltas]
    if deltas and corl is None:
        raise PilipError(f"{where}.delta needs a `corl` stage before it")
    if not isinstance(deltas, Sequence) or isinstance(deltas, str):
        raise PilipError(f"{where}.delta must be a list of stages")
    for number, raw in enumerate(deltas, start=1):
        key = f"delta[{number - 1}]"
        raw = stage_spec(key, raw, "delta")
        method = method_of(raw, key, "method")
        lesser = method_of(raw, key, "lesser") if "lesser" in raw else stages[-1].method
        stages.append(
            _make_stage(
                f"delta{number}",
                method,
                lesser,
                str(raw["basis"]),
                raw.get("scheme"),
                raw.get("alpha"),
                f"{where}.{key}",
            )
        )
    label = describe(stages)
    return Recipe(stages=tuple(stages), label=label)


def describe(stages: Sequence[Stage]) -> str:
    """A one-line description such as ``hf/cc-pv[tq]z + mp2/cc-pv[tq]z + d:ccsd(t)-mp2/...``."""

    def series(stage: Stage) -> str:
        if len(stage.bases) == 1:
            return stage.bases[0]
        first, last = stage.bases[0], stage.bases[-1]
        i = next(k for k in range(len(first)) if first[k] != last[k])
        letters = "".join(b[i] for b in stage.bases)
        return f"{first[:i]}[{letters}]{first[i + 1 :]}"

    parts = []
    for stage in stages:
        if stage.name == "scf":
            text = f"hf/{series(stage)}"
        elif stage.name == "dft":
            text = f"{stage.method}/{series(stage)}"
        elif stage.name == "corl":
            text = f"{stage.method}/{series(stage)}"
        else:
            text = f"d:{stage.method}-{stage.lesser}/{series(stage)}"
        parts.append(f"{text} ({stage.scheme})" if stage.scheme != "xtpl_highest_1" else text)
    return " + ".join(parts)


# --- which calculations to run ----------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One Psi4 calculation: ``method`` in ``basis`` (a gradient or an energy)."""

    method: str
    basis: str
    gradient: bool

    @property
    def provides(self) -> dict[str, str]:
        """method -> Psi4 variable of every total energy this calculation yields."""
        return provides(self.method)


def plan_jobs(recipe: Recipe, *, gradients: bool) -> list[Job]:
    """The calculations a recipe needs, the way Psi4's ``cbs()`` chooses them.

    Energies: one calculation per basis, of the method that contains all others needed in
    that basis (CCSD(T) yields HF, MP2, CCSD). Gradients: one gradient calculation per total
    energy with a non-zero weight, plus energy-only runs for what is still missing.
    """
    needed = recipe.required_totals()
    jobs: list[Job] = []
    covered: set[tuple[str, str]] = set()
    if gradients:
        for method, basis in recipe.gradient_weights():
            jobs.append(Job(method, basis, True))
        for job in jobs:
            covered.update((m, job.basis) for m in job.provides)
    by_basis: dict[str, list[str]] = {}
    for method, basis in needed:
        if (method, basis) not in covered:
            by_basis.setdefault(basis, []).append(method)
    energy_jobs = []
    for basis, methods in by_basis.items():
        tops = [m for m in methods if all(other in provides(m) for other in methods)]
        if not tops:
            raise PilipError(
                f"recipe {recipe.label!r} needs {', '.join(methods)} in {basis}, and no one of "
                "them yields the others; use methods that nest (e.g. MP2 inside CCSD(T))"
            )
        energy_jobs.append(Job(tops[0], basis, False))
    # Psi4's order: by first use of each calculation (mp2/cc-pvdz before mp2/cc-pvtz)
    energy_jobs.sort(key=lambda job: needed.index((job.method, job.basis)))
    return jobs + energy_jobs


def totals_from_jobs(
    jobs: Sequence[Job], energies: Sequence[Mapping[str, float]]
) -> dict[tuple[str, str], float]:
    """Total energies ``T[(method, basis)]`` from each job's energies (method -> Hartree).

    A method's own calculation wins over a value read from a bigger one (as in Psi4's
    gradient mode, where HF gradients come from separate HF runs).
    """
    totals: dict[tuple[str, str], float] = {}
    for job, values in zip(jobs, energies, strict=True):
        for method, value in values.items():
            key = (method, job.basis)
            if key not in totals or method == job.method:
                totals[key] = float(value)
    return totals
