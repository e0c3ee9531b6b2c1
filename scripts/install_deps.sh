#!/usr/bin/env bash
# Installs Memento's dependencies on Debian 12 with apt-get. Idempotent and quiet when everything
# is already there. Needs root (or sudo) only when something is missing.
#
#   scripts/install_deps.sh          what building, training and the whole test suite need
#   scripts/install_deps.sh train    only what building and training on the CPU need (quickstart)
#   scripts/install_deps.sh PROFILE --list   print the profile's packages, install nothing
set -euo pipefail
profile=${1:-test}
list_only=${2:-}
case "$profile" in
  train | test) ;;
  *) echo "install_deps: unknown profile '$profile' (expected 'train' or 'test')" >&2; exit 2 ;;
esac

# Building, training on the CPU (one process or mpirun), preparing data, and the quickstart corpus.
packages=(
  build-essential cmake ninja-build pkg-config
  libopenblas-openmp-dev libhdf5-dev libyaml-cpp-dev libomp-dev
  libopenmpi-dev openmpi-bin libboost-dev
  # trainer-data: SentencePiece models (Llama 2), Hugging Face tokenizer.json and JSONL (JSON),
  # the tokenizers' pre-tokenisation regular expressions (PCRE2, Unicode classes).
  libsentencepiece-dev nlohmann-json3-dev libpcre2-dev
  # Unicode normalization (NFC) that tokenizer.json files such as Qwen's ask for.
  libicu-dev
  # The quickstart's corpus: text that ships with Debian.
  fortunes fortunes-min
)
if [ "$profile" = test ]; then
  packages+=(
    libgtest-dev
    # scripts/check_format.sh: Debian 12's clang-format is version 14.
    clang-format
    # The one-node Slurm cluster of tests/launch/slurm_test.cpp (scripts/slurm/local_cluster.sh):
    # srun --mpi=pmix loads libpmix2, the PMIx that Debian's OpenMPI is built against. Where
    # systemd runs, the packages' default services fail to start for want of
    # /etc/slurm/slurm.conf; local_cluster.sh starts its own daemons with its own configuration.
    slurmctld slurmd slurm-client munge libpmix2
  )
fi

if [ "$list_only" = --list ]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_deps: need root to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
