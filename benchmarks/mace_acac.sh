#!/usr/bin/env bash
# MACE against PaiNN on acetylacetone through the pilip CLI, the same CPU budget per run.
#
#   bash benchmarks/mace_acac.sh OUT [N_TRAIN] [SEEDS] [CPU_MINUTES] [RECIPES] [JOBS]
#   e.g. bash benchmarks/mace_acac.sh /tmp/mace_acac 100 "0" 8 "energy ceiling" 2
#
# Data (read in place from ../shared/data/acac): train_300K.xyz imported with hash splits
# 0.9/0.1 (448 train, 52 val), --n-train of its train split; test_MD_300K.xyz (650) as the
# test set. Recipes: energy (energies only), ceiling (reference energies and forces). Each
# run: both models at their default size, float32, batch 16, lr 1e-3 for PaiNN and 1e-2 for
# MACE (LR_PAINN, LR_MACE; MACE at 1e-3 learns forces ~4x slower per epoch), stopped by
# --cpu-minutes (or early stopping), then pilip evaluate on the test set. Prints a table
# (test energy RMSE meV, force RMSE eV/A, epochs) at the end; OUT/<recipe>_<model>_n<N>_s<S>/
# holds each run and its evaluation.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: mace_acac.sh OUT [N_TRAIN] [SEEDS] [CPU_MINUTES] [RECIPES] [JOBS]}
n=${2:-100}
seeds=${3:-"0 1 2"}
minutes=${4:-8}
recipes=${5:-"energy ceiling"}
jobs=${6:-2}
data=${PILIP_ACAC:-$root/../shared/data/acac}
pilip=$root/.venv/bin/pilip
export OMP_NUM_THREADS=1
mkdir -p "$out"
[ -f "$out/train.parquet" ] || "$pilip" import "$data/train_300K.xyz" -o "$out/train.parquet" \
    --reference dft --splits 0.9,0.1,0 --system acac
[ -f "$out/test.parquet" ] || "$pilip" import "$data/test_MD_300K.xyz" -o "$out/test.parquet" \
    --reference dft --split test --system acac

one() {  # recipe model seed
    local recipe=$1 model=$2 seed=$3 losses=energy lr=${LR_PAINN:-1e-3}
    [ "$model" = mace ] && lr=${LR_MACE:-1e-2}
    [ "$recipe" = ceiling ] && losses=energy,forces
    local run=$out/${recipe}_${model}_n${n}_s${seed}
    "$pilip" train "$out/train.parquet" --out "$run" --model "$model" --losses "$losses" \
        --n-train "$n" --seed "$seed" --cpu-minutes "$minutes" --epochs 100000 --lr "$lr" \
        --threads 1 --device cpu --no-progress 2> "$run.log" || { echo "FAILED $run"; return; }
    "$pilip" evaluate "$run/model.pt" "$out/test.parquet" --out "$run/eval" --device cpu \
        2>> "$run.log" >/dev/null
}
export -f one
export out n minutes pilip
for recipe in $recipes; do for seed in $seeds; do for model in painn mace; do
    echo "$recipe $model $seed"
done; done; done | xargs -P "$jobs" -L 1 bash -c 'one $0 $1 $2'

"$root/.venv/bin/python" - "$out" <<'EOF'
import json, sys
from pathlib import Path
print("| run | test energy RMSE (meV) | test force RMSE (eV/A) | epochs | train wall min |")
print("|---|---:|---:|---:|---:|")
for m in sorted(Path(sys.argv[1]).glob("*/eval/metrics.json")):
    r = json.loads(m.read_text())
    print(f"| {m.parents[1].name} | {1000 * r['energy_rmse']:.1f} | {r['force_rmse']:.3f} "
          f"| {r['epochs']} | {r['train_time_s'] / 60:.1f} |")
EOF
