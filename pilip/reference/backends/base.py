"""The reference-method interface every backend implements, and the results-file helpers.

A backend turns configurations into one JSON line each in a *results file* (JSONL). The
labelling step (``pilip.reference.labelling``) owns everything else: reading the configurations,
resuming, retrying failed rows and writing the labels Parquet table (``pilip.reference.labels``).

Units at this boundary: positions in Angstrom, ``energy`` in eV, ``forces`` in eV/A,
``components`` in Hartree (the names say what they are: ``scf/cc-pvdz``,
``mp2_corl/cc-pvtz``, ...).

A config dict::

    {"id": str, "numbers": list[int], "positions": list[[x, y, z]] (Angstrom),
     "charge": int, "multiplicity": int}

A results line (one JSON object per finished configuration; the last one for an id wins)::

    {"config_id": str, "status": "ok"|"failed"|"timeout", "energy": float|None (eV),
     "forces": [[fx, fy, fz], ...]|None (eV/A), "components": {name: Eh}, "error": str|None,
     "wall_time": float (s), "attempts": int, "program": str, "program_version": str,
     "method": str, "options": dict, "threads": int, "host": str, "date": ISO-8601 str}
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import io
import json
import signal
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from pilip.atomic_io import append_bytes
from pilip.errors import PilipError

RESULT_FIELDS: tuple[str, ...] = (
    "config_id",
    "status",
    "energy",
    "forces",
    "components",
    "error",
    "wall_time",
    "attempts",
    "program",
    "program_version",
    "method",
    "options",
    "threads",
    "host",
    "date",
)


def installed_version(distribution: str) -> str:
    """The installed version of a Python distribution (for provenance), or "unknown"."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


class Backend(abc.ABC):
    """One reference method: a named entry of config.yaml ``references:``.

    Subclasses set ``name`` (the registry name used as ``backend:`` in the config), validate
    their spec in ``__init__`` (no quantum chemistry there) and implement ``run``.
    """

    name: ClassVar[str]
    # True when the backend computes one structure inside this Python process
    # (``energy_and_forces``), so it can serve as a Delta-learning baseline at inference
    # (``pilip train --baseline``, ``PilipCalculator``); Psi4 runs in another interpreter.
    in_process: ClassVar[bool] = False
    # MB of memory the job may use (``labelling.mem_mb`` / ``pilip label --mem-mb``), set by
    # pilip label before ``run``; None when unknown. A backend that can bound its program's
    # memory gives it ``program_memory_mb()`` (Psi4: ``memory``); an explicit memory option in
    # the reference's ``options`` wins.
    memory_mb: int | None = None
    MEMORY_FRACTION: ClassVar[float] = 0.8  # the rest: interpreter, libraries, buffers

    def __init__(self, reference: str, spec: dict[str, Any]) -> None:
        """Keep the reference name and its config entry; subclasses validate ``spec``.

        Errors must be one-line ``PilipError``s naming ``references.<reference>.<key>`` and
        the fix.
        """
        self.reference = reference
        self.spec = dict(spec)

    def program_memory_mb(self) -> int | None:
        """MB for the quantum-chemistry program: ``MEMORY_FRACTION`` of ``memory_mb``."""
        if self.memory_mb is None:
            return None
        return max(1, int(self.MEMORY_FRACTION * self.memory_mb))

    def key(self, field: str) -> str:
        """The config path of one field of this reference, for error messages."""
        return f"references.{self.reference}.{field}"

    def check(self, configs: list[dict[str, Any]]) -> None:
        """Cheap pre-flight on the configurations, before any quantum chemistry.

        The default checks that the electron count fits the multiplicity. Subclasses extend it
        (unknown elements for a basis set, interpreter present, closed-shell methods, ...).
        """
        check_spin(configs, self.reference)

    @abc.abstractmethod
    def run(
        self,
        configs: list[dict[str, Any]],
        results: Path,
        *,
        threads: int,
        gradients: bool,
        scratch: Path,
        retry_options: dict[str, Any] | None,
        timeout_s: float | None,
    ) -> None:
        """Compute every config whose id has no line in ``results`` yet.

        Appends ONE JSON line per finished configuration and flushes it, so ``kill -9`` loses
        at most the geometry in progress (a half-written last line is ignored by readers;
        ``open_results_for_append`` cuts it off before appending). A failed calculation is a
        line with ``status`` failed/timeout and the error text, never an exception.
        ``gradients`` asks for forces (eV/A) as well as energies. ``scratch`` is a private
        folder the backend may use and must leave. ``retry_options`` are the fallback
        options for one retry of a failed calculation (None: no retry). ``timeout_s`` limits
        one configuration's wall time where the backend can enforce it.
        """

    def energy_and_forces(self, config: dict[str, Any]) -> tuple[float, list[list[float]]]:
        """Energy (eV) and forces (n_atoms, 3, eV/A) of one config dict, in this process.

        Raises on a failed calculation (the caller records it). Only backends with
        ``in_process = True`` implement it.
        """
        raise PilipError(
            f"backend {self.name!r} of reference {self.reference!r} does not run in process, "
            "so it cannot compute single structures on demand"
        )

    def extrapolate(self, components: dict[str, float], formula: dict[str, Any] | None) -> float:
        """Total energy in Hartree from stored components (``pilip reextrapolate``).

        ``formula`` None means this reference's own recipe. Backends without components
        cannot re-extrapolate.
        """
        raise PilipError(
            f"backend {self.name!r} of reference {self.reference!r} stores no energy "
            "components, so its totals cannot be re-extrapolated; relabel with another reference"
        )

    def formula_label(self, formula: dict[str, Any] | None) -> str:
        """The method string of the recipe ``formula`` describes (the rows' new ``method``)."""
        if not formula:
            return str(self.spec.get("method", ""))
        return json.dumps(formula, sort_keys=True)

    def provenance(self) -> dict[str, Any]:
        """Program, version, method string and options, as stored on every row."""
        return {
            "program": self.name,
            "program_version": "unknown",
            "method": str(self.spec.get("method", "")),
            "options": dict(self.spec.get("options") or {}),
        }


def check_spin(configs: Iterable[dict[str, Any]], reference: str) -> None:
    """Raise if a configuration's electron count cannot have its multiplicity.

    An even electron count needs an odd multiplicity (singlet, triplet, ...) and vice versa.
    """
    for config in configs:
        n_electrons = sum(int(z) for z in config["numbers"]) - int(config["charge"])
        multiplicity = int(config["multiplicity"])
        if n_electrons < 0 or multiplicity < 1 or (n_electrons + multiplicity) % 2 == 0:
            raise PilipError(
                f"configuration {config['id']}: {n_electrons} electrons (charge "
                f"{config['charge']}) cannot have multiplicity {multiplicity} for reference "
                f"{reference!r}; fix charge/multiplicity of its system in config.yaml"
            )


def check_closed_shell(configs: Iterable[dict[str, Any]], reference: str, method: str) -> None:
    """Raise if a closed-shell method meets an open-shell configuration."""
    for config in configs:
        if int(config["multiplicity"]) != 1:
            n_electrons = sum(int(z) for z in config["numbers"]) - int(config["charge"])
            raise PilipError(
                f"configuration {config['id']}: {n_electrons} electrons, multiplicity "
                f"{config['multiplicity']}, but references.{reference}.method {method!r} is "
                "closed-shell; set reference: uhf/rohf in its options or fix the system"
            )


# Every results line ends with a CRC-32 of the rest of the line, so that a flipped bit (a
# digit of an energy) is an error on reading rather than another label:
#   {"config_id":...,"energy":...,"crc32":"1a2b3c4d"}
CRC_KEY = "crc32"
_CRC_HEAD = f',"{CRC_KEY}":"'.encode()
_CRC_LENGTH = len(_CRC_HEAD) + 8 + 2  # the head, 8 hex digits, '"}'


def results_line(record: dict[str, Any], allow_nan: bool = False) -> bytes:
    """One results line (with its newline) for ``record``, its CRC-32 appended."""
    body = json.dumps(record, separators=(",", ":"), allow_nan=allow_nan).encode()
    return body[:-1] + _CRC_HEAD + f"{zlib.crc32(body):08x}".encode() + b'"}\n'


def parse_results_line(raw: bytes) -> dict[str, Any]:
    """The record of one results line (without its newline); ValueError if it is broken or
    fails its CRC. Lines from before the CRC (none at the end) are read unverified."""
    record = json.loads(raw)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if CRC_KEY in record:
        line = raw.rstrip()
        tail, body = line[-_CRC_LENGTH:], line[:-_CRC_LENGTH] + b"}"
        if not tail.startswith(_CRC_HEAD) or f"{zlib.crc32(body):08x}" != record[CRC_KEY]:
            raise ValueError("its CRC-32 does not match: the line is damaged")
        del record[CRC_KEY]
    return record


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """Results lines by config id, the last line for an id winning.

    A missing file reads as empty. A last line without its newline (a writer killed mid-line)
    is ignored; a broken or damaged line anywhere else is an error, because that is not a
    crash.
    """
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    # the piece after the last newline was half-written by a killed process: recompute it
    complete = data.split(b"\n")[:-1]
    out: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            record = parse_results_line(raw)
            config_id = record["config_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PilipError(
                f"{path}:{number}: not a results line ({exc}); remove the line or the file "
                "to recompute"
            ) from None
        out[config_id] = record
    return out


def pending_configs(configs: list[dict[str, Any]], results: Path) -> list[dict[str, Any]]:
    """The configurations whose id has no line in ``results`` yet, in input order."""
    done = read_results(results)
    return [c for c in configs if c["id"] not in done]


def open_results_for_append(path: Path) -> io.TextIOWrapper:
    """Open a results file for appending, first cutting off a half-written last line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with open(path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", encoding="utf-8")


def append_result(fh: io.TextIOWrapper, record: dict[str, Any]) -> None:
    """Write one results line and push it to disk before the next geometry starts.

    A write that fails (a full disk) leaves no half line behind: the file is cut back to
    where the line started, and a full disk is a one-line PilipError naming the file.
    """
    fh.flush()  # nothing of ours may wait in the text buffer
    append_bytes(fh.fileno(), results_line(record), fh.name)


def result_record(
    config_id: str,
    *,
    status: str,
    energy: float | None,
    forces: list[list[float]] | None,
    components: dict[str, float] | None,
    error: str | None,
    wall_time: float,
    attempts: int,
    threads: int,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """One results line with host and date filled in (energy eV, forces eV/A, components Eh)."""
    return {
        "config_id": config_id,
        "status": status,
        "energy": energy,
        "forces": forces,
        "components": dict(components or {}),
        "error": error,
        "wall_time": float(wall_time),
        "attempts": int(attempts),
        "program": provenance["program"],
        "program_version": provenance["program_version"],
        "method": provenance["method"],
        "options": provenance["options"],
        "threads": int(threads),
        "host": socket.gethostname(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


class CalculationTimeout(BaseException):
    """Raised inside an in-process calculation that ran past its per-geometry time limit.

    A BaseException (as the Psi4 worker's own timeout), so that a library's ``except
    Exception`` around the code it interrupts cannot turn it into another error: a 1 ms limit
    once came back as a failed row instead of a timeout.
    """


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise CalculationTimeout in this (main) thread after ``seconds``; no limit if None.

    Uses SIGALRM, so compiled code is interrupted only when it hands control back to Python;
    outside the main thread (or without SIGALRM) no limit is enforced.
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CalculationTimeout(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


# (config, options) -> energy (eV), forces (eV/A) or None, components (Hartree)
SinglePoint = Callable[
    [dict[str, Any], dict[str, Any]], tuple[float, list[list[float]] | None, dict[str, float]]
]


def compute_pending(
    configs: list[dict[str, Any]],
    results: Path,
    single_point: SinglePoint,
    *,
    options: dict[str, Any],
    retry_options: dict[str, Any] | None,
    threads: int,
    provenance: dict[str, Any],
    timeout_s: float | None,
) -> int:
    """The ``run`` loop of an in-process backend; returns how many configurations it computed.

    For every configuration without a results line: ``single_point(config, options)``; if it
    raises, once more with ``{**options, **retry_options}`` (unless ``retry_options`` is
    None). An exception becomes a failed row with its text, a ``CalculationTimeout`` a timeout
    row. Each result is appended and flushed before the next configuration starts.
    """
    todo = pending_configs(configs, results)
    if not todo:
        return 0
    attempts = [options] if retry_options is None else [options, {**options, **retry_options}]
    with open_results_for_append(results) as fh:
        for config in todo:
            errors: list[str] = []
            status, energy, forces, components = "failed", None, None, None
            start = time.perf_counter()
            for attempt in attempts:
                try:
                    with time_limit(timeout_s):
                        energy, forces, components = single_point(config, attempt)
                except CalculationTimeout as exc:
                    status = "timeout"
                    errors.append(str(exc))
                    break  # a retry would run into the same limit
                except Exception as exc:  # failures are data: the row keeps the error text
                    errors.append(f"{type(exc).__name__}: {exc}".strip())
                    continue
                status = "ok"
                break
            append_result(
                fh,
                result_record(
                    config["id"],
                    status=status,
                    energy=energy if status == "ok" else None,
                    forces=forces if status == "ok" else None,
                    components=components if status == "ok" else None,
                    error="; retry: ".join(errors) if status != "ok" else None,
                    wall_time=time.perf_counter() - start,
                    attempts=len(errors) + (status == "ok"),
                    threads=threads,
                    provenance=provenance,
                ),
            )
    return len(todo)
