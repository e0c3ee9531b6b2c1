#!/usr/bin/env bash
# Installs dependencies, builds (warnings are errors) and runs the whole test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh test
BUILD_DIR=${BUILD_DIR:-build} bash scripts/build.sh -DMEMENTO_WERROR=ON -DMEMENTO_BUILD_TESTS=ON
cd "${BUILD_DIR:-build}"
[ -f CTestTestfile.cmake ] && grep -q subdirs CTestTestfile.cmake \
  || { echo "test.sh: the tests were not configured (is GoogleTest installed?)" >&2; exit 1; }
ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
