#!/usr/bin/env bash
# Configures and builds Memento in Release into build/ (or $BUILD_DIR). Extra args go to CMake
# (each call configures again, so a dependency installed since the last build is found);
# TARGETS="trainer trainer-data" builds only those targets.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
generator=()
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
else
  cmake -S . -B "$build_dir" "$@" >/dev/null
fi
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build_dir" --parallel "$(nproc)" "${targets[@]}"
