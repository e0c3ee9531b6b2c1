#!/usr/bin/env bash
# Times a 2-rank gradient all-reduce of the tiny model's flat buffer (GradientReducer over MPI)
# against one bare MPI_Allreduce of the same bytes. Prints numbers; not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build TARGETS="bench_allreduce" bash scripts/build.sh >/dev/null
mpirun --oversubscribe --allow-run-as-root -x OMP_WAIT_POLICY=passive -np "${NP:-2}" \
  build/bin/bench_allreduce "${1:-configs/tiny.yaml}" "${REPEATS:-30}"
