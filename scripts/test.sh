#!/usr/bin/env bash
# Installs dependencies, builds (warnings are errors) and runs the whole test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
BUILD_DIR=${BUILD_DIR:-build} bash scripts/build.sh -DMEMENTO_WERROR=ON
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
