#!/usr/bin/env bash
# Download into .whl/ the wheels benchmarks/gpu_session.sh needs on the device machine
# (Python 3.12, x86_64, its own torch/numpy/scipy/pyarrow/matplotlib/e3nn; nothing can be
# fetched there): pilip's pure dependencies that image lacks, and mace-torch with what
# `import mace.modules` and mace's calculator import beyond that image. Run here, from the
# repository root, where PyPI is reachable; then carry [".whl", ".devrun"].
# (cuEquivariance for CUDA 13, cuequivariance-ops-cu13 + cuequivariance-ops-torch-cu13, is
# 74 MB of wheels, over one call's 64 MiB: it would need two calls on one warm machine.)
set -euo pipefail
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
platforms=()
for n in 2_28 2_27 2_24 2_17 2014 1; do
    case $n in
        2014) platforms+=(--platform manylinux2014_x86_64) ;;
        1) platforms+=(--platform manylinux1_x86_64) ;;
        *) platforms+=(--platform "manylinux_${n}_x86_64") ;;
    esac
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl \
    "ase==3.29.0" "vesin==0.6.2" "jsonschema==4.26.0" "jsonschema-specifications==2025.9.1" \
    "referencing==0.37.0" "rpds-py==2026.9.1" \
    "mace-torch==0.3.16" "torch-ema==0.3" "matscipy==1.3.1" "lmdb==3.0.0" "orjson==3.13.0"
ls -la .whl
du -sh .whl
