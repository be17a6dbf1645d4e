#!/usr/bin/env bash
# Regenerate docs/benchmarks/{glaucoma_odir,referable_dr_aptos,glaucoma_odir_160}.{md,json,png} from ../shared.
# Usage: benchmarks/run_real.sh [--only NAME ...]   (run from a checkout set up by `python3 dev.py test`)
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGERETINA_SHARED="${EDGERETINA_SHARED:-$(cd .. && pwd)/shared}"
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -m edgeretina.benchmarks.real_data "$@"
