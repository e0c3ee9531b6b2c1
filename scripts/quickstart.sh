#!/usr/bin/env bash
# From a fresh Debian 12 machine to a trained model in one command, on the CPU:
#   installs dependencies (apt-get), builds in Release, prepares the fortunes corpus (text that
#   ships with Debian's `fortunes` packages), trains a BPE tokenizer and configs/tiny.yaml, and
#   prints text sampled from the trained model.
# Extra arguments are passed to the trainer, e.g. scripts/quickstart.sh --set train.steps=100
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh train
echo "== building (Release)"
BUILD_DIR=build TARGETS="trainer trainer-data" bash scripts/build.sh >/dev/null
bin=build/bin

corpus=/usr/share/games/fortunes
mkdir -p data
if [ ! -f data/fortunes.bpe ]; then
  echo "== training a byte-level BPE tokenizer on $corpus"
  "$bin/trainer-data" train-tokenizer --vocab-size 2048 --doc-separator % --out data/fortunes.bpe "$corpus"
fi
# Shards data/fortunes_{train,val}_000000.bin, ...; configs/tiny.yaml's data/fortunes_train.bin
# names them (a .bin path that is not a file stands for its shards).
if [ ! -f data/fortunes_train_000000.bin ] || [ ! -f data/fortunes_val_000000.bin ]; then
  echo "== tokenizing $corpus"
  "$bin/trainer-data" tokenize --tokenizer data/fortunes.bpe --doc-separator % \
    --val-fraction 0.05 --out data/fortunes "$corpus"
fi

echo "== training configs/tiny.yaml"
"$bin/trainer" --config configs/tiny.yaml "$@"

echo "== sampling from the trained model"
for prompt in "The " "Q: What is" "A man"; do
  "$bin/trainer" sample --checkpoint runs/tiny/checkpoints --prompt "$prompt" --tokens 80 --seed 7
  echo "--"
done
