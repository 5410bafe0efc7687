#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine; a second run does nothing new.
#   .venv       main environment: torch (CPU 2.13.0 unless a torch is already there), pilip[dev]
#   .venv-psi4  the Psi4 worker's environment: Debian's psi4 with numpy<2 (Psi4 1.3.2 reads
#               geometries as zeros under NumPy 2, so it cannot share the main environment)
# Set PILIP_SKIP_APT=1 to skip apt-get (e.g. without root; Psi4 labelling is then unavailable
# unless PILIP_PSI4_PYTHON names an interpreter that imports psi4).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
python=${PILIP_PYTHON:-python3}

log() { echo "[pilip setup] $*" >&2; }

# --- system packages ---------------------------------------------------------------------------
apt_missing=()
for pkg in psi4 libopenblas0-openmp python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || apt_missing+=("$pkg")
done
if [ ${#apt_missing[@]} -gt 0 ] && [ "${PILIP_SKIP_APT:-0}" != 1 ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        log "apt-get install ${apt_missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${apt_missing[@]}" >/dev/null
    else
        log "missing system packages: ${apt_missing[*]}; run as root: apt-get install -y --no-install-recommends ${apt_missing[*]}"
    fi
fi

# --- main environment --------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $python"
    "$python" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    log "installing torch==2.13.0 (CPU)"
    .venv/bin/pip install -q torch==2.13.0
fi
stamp=.venv/.pilip-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing pilip[dev] (editable)"
    .venv/bin/pip install -q -e ".[dev]"
    echo "$want" > "$stamp"
fi

# --- Psi4 worker environment ------------------------------------------------------------------
psi4_dir=$(dpkg -L psi4 2>/dev/null | grep -m1 '/psi4/__init__.py$' | xargs -r dirname || true)
if [ -n "$psi4_dir" ] && [ ! -f .venv-psi4/.pilip-installed ]; then
    log "creating .venv-psi4 (numpy<2) for the Psi4 worker"
    rm -rf .venv-psi4
    /usr/bin/python3 -m venv .venv-psi4
    .venv-psi4/bin/pip install -q "numpy<2" qcelemental deepdiff
    site=$(.venv-psi4/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    dirname "$psi4_dir" > "$site/psi4.pth"
    .venv-psi4/bin/python -c "import psi4, numpy; assert int(numpy.__version__.split('.')[0]) < 2"
    touch .venv-psi4/.pilip-installed
fi
log "ready: $root/.venv$( [ -f .venv-psi4/.pilip-installed ] && echo " and $root/.venv-psi4")"
