#!/usr/bin/env bash
# One GPU session: CUDA proof + step-time benchmark + pilip train throughput + acac grid.
# Runs from the repository root on a machine with torch+CUDA; results go to $OUT (default
# benchmarks/out/gpu). Python packages missing there (ase, vesin, jsonschema; mace-torch and
# what it imports) are given as wheels in .whl/: `bash benchmarks/gpu_wheels.sh` fetches
# them (5 MB). The acac data is read from $ACAC (default ../shared/data/acac).
# Through the device tool (nothing reachable from the machine, $OUT collected): copy the data
# to .devrun/acac, then run "GRID_SECONDS=0 ACAC=.devrun/acac bash benchmarks/gpu_session.sh"
# with carry [".whl", ".devrun"] (~5 min without the acac grid).
set -uo pipefail
OUT=${OUT:-benchmarks/out/gpu}
ACAC=${ACAC:-../shared/data/acac}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$(pwd)
else
    export PYTHONPATH=$(pwd)
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"

# 1. CUDA proof: the CUDA tests, then pilip import -> train (weak losses) -> evaluate on CUDA
python3 -m pytest -q -x -p no:cacheprovider tests/unit/test_calculator.py tests/unit/test_train.py \
    tests/unit/test_static_step.py -k cuda 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt"
python3 -m pilip.cli import "$ACAC/train_300K.xyz" -o /tmp/acac.parquet --reference dft \
    --splits 0.8,0.1,0.1 > /dev/null
python3 -m pilip.cli train /tmp/acac.parquet --out /tmp/acac_run --losses energy,pitc,pisc \
    --n-train 100 --epochs 5 --device cuda --no-progress 2>&1 | tail -3 | tee "$OUT/cuda_train.txt"
python3 -m pilip.cli evaluate /tmp/acac_run/model.pt /tmp/acac.parquet --out /tmp/acac_eval \
    --device cuda 2>&1 | tail -2
cp /tmp/acac_eval/metrics.json "$OUT/cuda_eval_metrics.json" 2>/dev/null
cp /tmp/acac_run/metrics.csv "$OUT/cuda_train_metrics.csv" 2>/dev/null

# 2. step time, PaiNN and SchNet, batches 6/32/128
timeout ${STEP_SECONDS:-130} python3 -m benchmarks.step_time --device cuda --out "$OUT/step_time" \
    2>&1 | tail -40

# 2b. pilip train itself: three calls vs fused vs fused + static shapes (CUDA graph)
timeout ${THROUGHPUT_SECONDS:-150} python3 -m benchmarks.train_throughput --device cuda \
    --data "$ACAC" --out "$OUT/train_throughput" 2>&1 | tail -8

# 2c. MACE against PaiNN (issue 20): training-step time on CUDA at batches of 16 and 128 acac
# geometries (e3nn kernels; cuEquivariance's wheels do not fit one call), then --model mace
# through pilip train on CUDA
for b in 16 128; do
    timeout ${MACE_SECONDS:-90} python3 -m benchmarks.mace_step_time --xyz "$ACAC/train_300K.xyz" \
        --device cuda --batch-size $b --repeats 20 2>&1 | tee "$OUT/mace_step_time_b$b.md"
done
timeout ${MACE_SECONDS:-90} python3 -m pilip.cli train /tmp/acac.parquet --out /tmp/acac_mace \
    --model mace --losses energy,forces --n-train 100 --epochs 5 --device cuda --no-progress \
    2>&1 | tail -3 | tee "$OUT/cuda_train_mace.txt"
cp /tmp/acac_mace/metrics.csv "$OUT/cuda_train_mace_metrics.csv" 2>/dev/null

# 3. data efficiency on acac (energy-only labels; forces for evaluation only); GRID_SECONDS=0
# skips it
[ "${GRID_SECONDS:-270}" = 0 ] || timeout ${GRID_SECONDS:-270} python3 -m benchmarks.acac_data_efficiency --device cuda \
    --data "$ACAC" --variants "${GRID_VARIANTS:-energy,weak,weak_unl,paper}" --jobs "${GRID_JOBS:-11}" \
    --minutes-per-run "${GRID_RUN_MINUTES:-1.2}" --out "$OUT/acac" 2>&1 | tail -45
ls -R "$OUT" | head -30
