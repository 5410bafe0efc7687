#!/usr/bin/env bash
# MACE against PaiNN on acetylacetone: the older positional interface of
# `python -m benchmarks.mace_acac` (the benchmark itself; its --help lists every option).
#
#   bash benchmarks/mace_acac.sh OUT [N_TRAIN] [SEEDS] [CPU_MINUTES] [RECIPES] [JOBS] [OPTION...]
#   e.g. bash benchmarks/mace_acac.sh /tmp/mace_acac 100 "0" 8 "energy ceiling" 2
#
# N_TRAIN: sizes (default 100; "100 450" both), SEEDS (default "0 1 2"), CPU_MINUTES per run
# and per pretraining run (default 8), RECIPES among energy delta finetune ceiling distilled
# (default "energy ceiling"), JOBS in parallel (default 2); OPTIONs go to the module as they
# are (e.g. --lr-mace 5e-3, --table).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: mace_acac.sh OUT [N_TRAIN] [SEEDS] [CPU_MINUTES] [RECIPES] [JOBS] [OPTION...]}
n=${2:-100}
seeds=${3:-"0 1 2"}
minutes=${4:-8}
recipes=${5:-"energy ceiling"}
jobs=${6:-2}
shift $(($# < 6 ? $# : 6))
out=$(realpath -m "$out")  # the module runs from the repository root
commas() { echo "$1" | xargs | tr ' ' ','; }
cd "$root"
OMP_NUM_THREADS=1 exec "$root/.venv/bin/python" -m benchmarks.mace_acac --out "$out" \
    --sizes "$(commas "$n")" --seeds "$(commas "$seeds")" --cpu-minutes "$minutes" \
    --pretrain-cpu-minutes "$minutes" --recipes "$(commas "$recipes")" --jobs "$jobs" "$@"
