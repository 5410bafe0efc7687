"""pilip's Psi4 worker: computes one chunk of geometries under the Psi4 interpreter.

    python psi4_worker.py REQUEST.json

Runs under the interpreter that imports psi4 (never the main environment: Psi4 1.3.2 needs
NumPy < 2) and uses nothing but the standard library and psi4. The request (written by
``pilip.reference.backends.psi4_backend``) names the geometries (Angstrom), the Psi4 calculations to
run for each (method, basis, energy or gradient, which energy variables to read), the
options, the fallback options for one retry, threads, memory, a per-geometry timeout and the
files to use.

For every geometry it appends one JSON line to the request's ``results`` file and flushes
it; ids that already have a complete line of the same ``plan`` (a fingerprint of the
calculations and options) are skipped, so a killed worker restarts where it stopped. Before
each geometry its id goes to the ``progress`` file, so the caller knows which geometry a
crash or a hang inside Psi4's C++ code hit. A line holds, per calculation, the total
energies in Hartree and the gradient in Hartree/Bohr: units are converted by the caller.
Failures are lines too (``failed`` with the error text, ``timeout``), never a crash of the
chunk.

Exit status: 0 when every geometry has a line; 2 with one ``psi4_worker: error: ...`` line on
stderr when the request or the environment is unusable (nothing computed); 3 when another
worker holds the results file; 4 when the disk, not the geometry, failed: a geometry failed
with an I/O error ("PSIO Error", "No space left on device", a quota) or while a folder it writes
to (results, Psi4 output, scratch) was nearly full (Psi4 then fails with errors such as
"PSIOManager cannot get a mirror file handle"), or its results line could not be written. No
line is written for that geometry, the one stderr line reads ``psi4_worker: error: disk:
PATH: REASON``, and the geometry is computed again once space is freed; 5 after a geometry's
``timeout`` line: a calculation interrupted inside Psi4 leaves its timers and files in a state
that fails or hangs the next geometries ("Timer HF: Form G is already on"), so the worker
stops and pilip starts a fresh one for the rest.
"""

import atexit
import gc
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3
EXIT_DISK_FULL = 4
EXIT_FRESH_START = 5  # after a timeout: Psi4's state is not trusted for the next geometry
NEARLY_FULL_BYTES = 1 << 20  # as pilip.atomic_io: below this a failure may be the disk's
DISK_TAG = "disk: "  # starts the error line of exit status 4 (pilip's backend reads it)
# error texts that say a file could not be written or read: the disk's fault, not the geometry's
IO_ERROR_MARKS = (
    "psio error",
    "psiomanager",
    "no space left on device",
    "disk quota exceeded",
    "read-only file system",
    "input/output error",
    "[errno 5]",
    "[errno 28]",
    "[errno 30]",
    "[errno 122]",
)
INSTALL_HINT = (
    "apt-get install -y --no-install-recommends psi4 libopenblas0-openmp, "
    "then bash scripts/setup.sh"
)


class GeometryTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so that Psi4's ``except Exception`` cannot eat it."""


def fail(message, status=EXIT_BAD_INPUT):
    print(f"psi4_worker: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def check_numpy():
    """Refuse NumPy >= 2: Psi4 1.3.2 then silently builds molecules with all-zero geometries."""
    try:
        import numpy
    except ImportError as exc:
        fail(f"{sys.executable} cannot import numpy ({exc}); install Psi4 with: {INSTALL_HINT}")
    major = int(numpy.__version__.split(".")[0])
    if major >= 2:
        fail(
            f"NumPy {numpy.__version__} in {sys.executable}: Psi4 1.3.2 reads geometries as "
            "zeros under NumPy >= 2, so the worker refuses to run; use the Psi4 interpreter "
            "with numpy<2 (.venv-psi4/bin/python from scripts/setup.sh, or set "
            "labelling.psi4_python / PILIP_PSI4_PYTHON)"
        )


def load_request(path):
    try:
        with open(path, encoding="utf-8") as fh:
            request = json.load(fh)
    except (OSError, ValueError) as exc:
        fail(f"cannot read request {path}: {exc}")
    required = ("configs", "jobs", "results", "scratch")
    missing = [key for key in required if key not in request]
    if missing:
        fail(f"request {path} lacks {', '.join(missing)}")
    if not request["jobs"]:
        fail(f"request {path} has no calculations in `jobs`")
    for job in request["jobs"]:
        if not {"method", "basis", "variables"} <= set(job):
            fail(f"request {path}: a job needs method, basis and variables, got {job}")
        # optional "required": the methods whose energies must be set (default: all)
    for config in request["configs"]:
        if not {"id", "numbers", "positions"} <= set(config):
            fail(f"request {path}: a configuration needs id, numbers and positions")
        if len(config["numbers"]) != len(config["positions"]):
            fail(f"request {path}: configuration {config['id']} has mismatched numbers/positions")
    return request


def read_done(path, plan):
    """Ids with a complete line of this ``plan`` (a half-written last line is ignored)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return set()
    done = set()
    for raw in data.split(b"\n")[:-1]:
        if raw.strip():
            try:
                record = json.loads(raw)
                if record.get("plan") == plan:
                    done.add(record["config_id"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return done


def open_results(path):
    """Open for appending after cutting off a half-written last line; lock against a twin."""
    import fcntl

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fh = open(path, "a+b")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fail(f"another worker is writing {path}", EXIT_LOCKED)
    fh.seek(0)
    data = fh.read()
    if data and not data.endswith(b"\n"):
        fh.truncate(data.rfind(b"\n") + 1)
    fh.seek(0, os.SEEK_END)
    return fh


def die_with_parent(parent_pid):
    """Ask Linux to kill this worker when its parent dies (a killed ``pilip label``)."""
    if not parent_pid:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        sys.exit(1)


def error_text(exc):
    """One line: exception type and its first meaningful message line (C++ traces dropped)."""
    message = getattr(exc, "message", None) or str(exc)
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    for line in lines:
        if line.startswith("Fatal Error:"):
            text = line
            break
    return f"{type(exc).__name__}: {text}"[:500]


def make_molecule(psi4, config):
    """A Psi4 molecule in the input frame: no recentring, no reorientation, no symmetry."""
    flat = [float(x) for xyz in config["positions"] for x in xyz]
    molecule = psi4.core.Molecule.from_arrays(
        elez=[int(z) for z in config["numbers"]],
        geom=flat,
        units="Angstrom",
        molecular_charge=int(config.get("charge", 0)),
        molecular_multiplicity=int(config.get("multiplicity", 1)),
        fix_com=True,
        fix_orientation=True,
        fix_symmetry="c1",
    )
    molecule.update_geometry()
    return molecule


def set_options(psi4, options, base_memory=None):
    """Reset Psi4's options to its defaults, then apply ``options`` (``memory`` included).

    Memory is no option that clean_options resets: without ``memory`` in ``options`` it
    returns to ``base_memory`` (bytes, the worker's start value), so that a retry's memory
    does not stay for the next geometry.
    """
    psi4.core.clean_options()
    options = dict(options)
    memory = options.pop("memory", base_memory)
    if memory is not None and memory != psi4.core.get_memory():
        psi4.set_memory(memory)
    if options:
        psi4.set_options(options)


def release_wavefunction(exc):
    """Close the files of an unconverged SCF wavefunction carried by a convergence error.

    Psi4 does the same for its own DF pre-iterations; left open, the wavefunction's DIIS
    manager aborts the process when it is destroyed after Psi4 has shut down.
    """
    wfn = getattr(exc, "wfn", None)
    if wfn is not None and hasattr(wfn, "finalize"):
        try:
            wfn.finalize()
        except Exception:
            pass


def reset_after_error(psi4):
    """Free what a failed attempt left behind (objects held in reference cycles through its
    traceback, Psi4's scratch files and variables) before the next attempt or geometry."""
    gc.collect()
    psi4.core.clean()
    psi4.core.clean_variables()


def run_jobs(psi4, molecule, jobs):
    """Run every calculation of one geometry; return per-job energies and gradients."""
    energies, gradients = [], []
    for job in jobs:
        psi4.core.set_global_option("BASIS", job["basis"])
        psi4.core.clean_variables()
        if job.get("gradient"):
            matrix = psi4.gradient(job["method"], molecule=molecule)
            natom = molecule.natom()
            gradient = [[matrix.get(i, k) for k in range(3)] for i in range(natom)]
        else:
            psi4.energy(job["method"], molecule=molecule)
            gradient = None
        values = {}
        required = job.get("required", list(job["variables"]))
        for method, variable in job["variables"].items():
            if psi4.core.has_variable(variable):
                values[method] = psi4.core.variable(variable)
            elif method in required:
                raise RuntimeError(f"Psi4 set no {variable!r} in {job['method']}/{job['basis']}")
        energies.append(values)
        gradients.append(gradient)
        psi4.core.clean()
        psi4.core.clean_variables()
    return energies, gradients


def compute(psi4, config, request, base_memory=None):
    """One geometry: every job, retried once with the fallback options; never raises."""
    options = request.get("options") or {}
    retry = request.get("retry_options")
    attempts_options = [options] + ([{**options, **retry}] if retry else [])
    timeout_s = request.get("timeout_s")
    start = time.perf_counter()
    errors = []
    record = {"config_id": config["id"], "energies": None, "gradients": None}
    if timeout_s:
        signal.setitimer(signal.ITIMER_REAL, float(timeout_s))
    try:
        molecule = make_molecule(psi4, config)
        for number, attempt_options in enumerate(attempts_options, start=1):
            record["attempts"] = number
            psi4.core.print_out(f"\n  pilip: configuration {config['id']}, attempt {number}\n")
            try:
                set_options(psi4, attempt_options, base_memory)
                energies, gradients = run_jobs(psi4, molecule, request["jobs"])
            except Exception as exc:
                errors.append(f"attempt {number}: {error_text(exc)}")
                release_wavefunction(exc)
                reset_after_error(psi4)
                continue
            record.update(status="ok", energies=energies, gradients=gradients, error=None)
            break
        else:
            record.update(status="failed", error="; ".join(errors))
    except GeometryTimeout:
        record.update(
            status="timeout",
            error=f"no result within the per-geometry timeout of {timeout_s} s"
            + (f" ({'; '.join(errors)})" if errors else ""),
        )
        record.setdefault("attempts", 1)
        reset_after_error(psi4)
    except Exception as exc:  # a bad geometry for Psi4 (e.g. unknown element): keep going
        record.update(status="failed", error=error_text(exc), attempts=record.get("attempts", 1))
        release_wavefunction(exc)
        reset_after_error(psi4)
    finally:
        if timeout_s:
            signal.setitimer(signal.ITIMER_REAL, 0)
    record["wall_time"] = time.perf_counter() - start
    return record


def disk_nearly_full(path):
    """Whether the filesystem holding ``path`` (a file or folder) has under 1 MiB free."""
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def is_io_error(text):
    """Whether an error text says Psi4 could not write (or read back) a file."""
    text = (text or "").lower()
    return any(mark in text for mark in IO_ERROR_MARKS)


def stop_for_disk(path, reason, results, scratch):
    """Exit with status 4 and one ``disk:`` line, writing no line for the current geometry."""
    print(f"psi4_worker: error: {DISK_TAG}{path}: {reason}", file=sys.stderr, flush=True)
    leave(EXIT_DISK_FULL, results, scratch)


def leave(status, results, scratch):
    """Exit now with ``status``, the results file closed and the scratch folder removed.

    ``os._exit``: Psi4's own exit clean-up aborts the process (SIGABRT) on files it could not
    write or calculations it did not finish, which would hide the exit status.
    """
    try:
        results.close()
    except OSError:
        pass
    shutil.rmtree(scratch, ignore_errors=True)
    os._exit(status)


def on_alarm(signum, frame):
    raise GeometryTimeout()


def main(argv):
    if len(argv) != 2:
        fail("usage: psi4_worker.py REQUEST.json")
    request = load_request(argv[1])
    check_numpy()
    die_with_parent(request.get("parent_pid"))

    threads = int(request.get("threads") or 1)
    os.makedirs(request["scratch"], exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="psi4-worker-", dir=request["scratch"])
    # all of this must be in place before psi4 is imported: it reads them once, at import
    os.environ["PSI_SCRATCH"] = scratch
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    results_path = os.path.abspath(request["results"])
    output = request.get("output")
    output = os.path.abspath(output) if output else None
    # registered before psi4 is imported, so it runs after psi4's own exit clean-up (LIFO)
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    os.chdir(scratch)  # Psi4 drops timer.dat and friends into the working directory
    try:
        import psi4
    except Exception as exc:
        fail(f"{sys.executable} cannot import psi4 ({error_text(exc)}); {INSTALL_HINT}")
    psi4.core.IOManager.shared_object().set_default_path(scratch)
    if output:
        os.makedirs(os.path.dirname(output), exist_ok=True)  # Psi4 dies on a missing folder
        psi4.core.set_output_file(output, True)
    else:
        psi4.core.be_quiet()
    psi4.core.set_num_threads(threads, True)
    if request.get("memory_mb"):  # the job's memory share; a `memory` option overrides it
        psi4.set_memory(int(request["memory_mb"]) * 1000**2)
    base_memory = psi4.core.get_memory()
    for key in ("options", "retry_options"):
        try:
            set_options(psi4, {**(request.get("options") or {}), **(request.get(key) or {})})
        except Exception as exc:
            fail(f"Psi4 rejects `{key}` {request.get(key)}: {error_text(exc)}")
    signal.signal(signal.SIGALRM, on_alarm)

    done = read_done(results_path, request.get("plan"))
    fh = open_results(results_path)
    progress = open(request["progress"], "a", encoding="utf-8") if request.get("progress") else None
    meta = {
        "plan": request.get("plan"),
        "psi4_version": psi4.__version__,
        "host": socket.gethostname(),
    }
    for config in request["configs"]:
        if config["id"] in done:
            continue
        if progress is not None:  # tells the caller which geometry a crash or hang hit
            try:
                progress.write(config["id"] + "\n")
                progress.flush()
            except OSError as exc:
                stop_for_disk(request["progress"], exc.strerror or str(exc), fh, scratch)
        record = compute(psi4, config, request, base_memory)
        if record.get("status") != "ok":
            error = record.get("error") or ""
            full = [f for f in (results_path, output, scratch) if f and disk_nearly_full(f)]
            if full:
                stop_for_disk(full[0], f"no space left on device ({error})", fh, scratch)
            if is_io_error(error):
                stop_for_disk(scratch, error, fh, scratch)
        record.update(meta)
        try:
            fh.write((json.dumps(record, separators=(",", ":")) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as exc:  # a half line is cut off by the next worker (open_results)
            stop_for_disk(results_path, exc.strerror or str(exc), fh, scratch)
        done.add(config["id"])
        if record.get("status") == "timeout" and any(
            c["id"] not in done for c in request["configs"]
        ):
            leave(EXIT_FRESH_START, fh, scratch)
    fh.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
