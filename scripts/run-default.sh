#!/usr/bin/env bash
# Set up (idempotent) and run the default study of config.yaml. Extra arguments go to Snakemake.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$(pwd)/.venv/bin:$PATH"
exec snakemake --cores "${PILIP_CORES:-2}" "$@"
