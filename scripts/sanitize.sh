#!/usr/bin/env bash
# Builds the CPU tests with AddressSanitizer and UndefinedBehaviorSanitizer into build-asan/ and
# runs them. Slower than scripts/test.sh; run before merging changes to memory-handling code.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh test
BUILD_DIR=build-asan bash scripts/build.sh -DCMAKE_BUILD_TYPE=Debug -DMEMENTO_SANITIZE=ON -DMEMENTO_WERROR=ON
cd build-asan
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --output-on-failure --timeout 1800 -j "$(nproc)" "$@"
