#!/usr/bin/env bash
# Installs Memento's build and run dependencies on Debian 12 with apt-get. Idempotent and quiet
# when everything is already there. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libopenblas-openmp-dev libhdf5-dev libyaml-cpp-dev libgtest-dev libomp-dev
  libopenmpi-dev openmpi-bin libboost-dev
  fortunes fortunes-min
  # The one-node Slurm cluster of tests/launch/slurm_test.cpp (scripts/slurm/local_cluster.sh):
  # srun --mpi=pmix loads libpmix2, the PMIx that Debian's OpenMPI is built against. Where
  # systemd runs, the packages' default services fail to start for want of /etc/slurm/slurm.conf;
  # local_cluster.sh starts its own daemons with its own configuration.
  slurmctld slurmd slurm-client munge libpmix2
)

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
