#!/usr/bin/env bash
# Installs dependencies, checks the formatting of the C++/CUDA files this checkout changed
# (scripts/check_format.sh), builds (warnings are errors) and runs the whole test suite through
# ctest. Bad formatting does not stop the build and the tests; it fails the script at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh test
format_status=0
format_report=$(bash scripts/check_format.sh 2>&1) || format_status=$?
echo "$format_report"
BUILD_DIR=${BUILD_DIR:-build} bash scripts/build.sh -DMEMENTO_WERROR=ON -DMEMENTO_BUILD_TESTS=ON
tests_status=0
(
  cd "${BUILD_DIR:-build}"
  [ -f CTestTestfile.cmake ] && grep -q subdirs CTestTestfile.cmake \
    || { echo "test.sh: the tests were not configured (is GoogleTest installed?)" >&2; exit 1; }
  ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
) || tests_status=$?
if [ "$format_status" -ne 0 ]; then
  echo "$format_report" >&2
  echo "test.sh: the formatting check failed (above)" >&2
fi
[ "$tests_status" -ne 0 ] && exit "$tests_status"
exit "$format_status"
