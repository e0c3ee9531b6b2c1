#!/usr/bin/env bash
# Checks that C++ and CUDA sources follow .clang-format (clang-format --dry-run -Werror).
#
#   scripts/check_format.sh          the files changed on this branch: against the merge-base with
#                                    origin/main (else main), plus uncommitted and untracked files
#   scripts/check_format.sh --all    every tracked C++/CUDA file
#   scripts/check_format.sh FILE...  those files
#
# Exits 1 naming the mis-formatted files and the command that fixes them. Outside a git checkout
# (a source tarball) there is nothing to compare against: it says so and exits 0. CLANG_FORMAT
# names the binary (default: clang-format-14, the version scripts/install_deps.sh installs, else
# clang-format); versions differ in their output, so the check is only as stable as the version.
set -euo pipefail
cd "$(dirname "$0")/.."

is_source() { [[ "$1" =~ \.(h|hpp|cc|cpp|cu|cuh)$ ]]; }

clang_format=${CLANG_FORMAT:-}
if [ -z "$clang_format" ]; then
  clang_format=clang-format
  command -v clang-format-14 >/dev/null && clang_format=clang-format-14
fi
command -v "$clang_format" >/dev/null || {
  echo "check_format: $clang_format not found (bash scripts/install_deps.sh test installs it)" >&2
  exit 1
}

files=()
if [ $# -gt 0 ] && [ "$1" != --all ]; then
  files=("$@")
else
  top=$(command -v git >/dev/null && git rev-parse --show-toplevel 2>/dev/null || true)
  if [ "$top" != "$(pwd -P)" ]; then
    echo "check_format: not a git checkout, nothing to compare against: skipped" \
      "(scripts/check_format.sh FILE... checks given files)"
    exit 0
  fi
  if [ "${1:-}" = --all ]; then
    mapfile -d '' candidates < <(git ls-files -z)
    what="tracked files"
  else
    base=""
    for ref in origin/main main; do
      if git rev-parse -q --verify "$ref^{commit}" >/dev/null; then
        # A shallow clone may lack the merge-base: then compare with the branch tip itself.
        base=$(git merge-base HEAD "$ref" 2>/dev/null) || base=$ref
        what="files changed since $ref (${base:0:12}) or not committed"
        break
      fi
    done
    if [ -z "$base" ]; then
      base=HEAD
      what="uncommitted files (no origin/main or main to compare with)"
    fi
    mapfile -d '' candidates < <(git diff -z --name-only --diff-filter=d "$base" --;
                                 git ls-files -z --others --exclude-standard)
  fi
  for f in "${candidates[@]}"; do
    is_source "$f" && [ -f "$f" ] && files+=("$f")
  done
  echo "check_format: ${#files[@]} C++/CUDA file(s) among the $what"
fi
[ ${#files[@]} -eq 0 ] && exit 0

# One clang-format per file, side by side: a file that fails prints its first violation.
bad=$(printf '%s\0' "${files[@]}" | xargs -0 -n 8 -P "$(nproc)" bash -c '
  for f in "$@"; do
    out=$("$0" --dry-run -Werror "$f" 2>&1) || {
      line=$(grep -m1 "error:" <<<"$out" || true)
      printf "%s\t%s\n" "$f" "${line:-$out}"
    }
  done' "$clang_format" | sort)
[ -z "$bad" ] && exit 0

echo "check_format: these files are not formatted as .clang-format says:" >&2
cut -f2 <<<"$bad" | sed 's/^/  /' >&2
echo "Fix them with:" >&2
echo "  $clang_format -i $(cut -f1 <<<"$bad" | tr '\n' ' ')" >&2
exit 1
