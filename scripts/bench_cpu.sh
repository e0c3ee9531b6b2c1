#!/usr/bin/env bash
# CPU throughput of `trainer`: tokens/s, MFU (against this machine's measured fp32 GEMM rate) and
# the share of step time spent in GEMMs, for configs/tiny.yaml and configs/llama-134m.yaml.
# A benchmark, not a test: it prints numbers. Needs the corpus from scripts/quickstart.sh
# (prepared here with plain bytes if missing). STEPS=N sets timed steps per config.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build TARGETS="trainer trainer-data" bash scripts/build.sh >/dev/null
bin=build/bin
steps=${STEPS:-6}

if [ ! -f data/fortunes_train_000000.bin ]; then
  mkdir -p data
  "$bin/trainer-data" tokenize --bytes --doc-separator % --out data/fortunes /usr/share/games/fortunes
fi

# Median of a JSONL field over the steps after the first (warm-up).
median() {
  grep -o "\"$2\": [0-9.e+-]*" "$1" | awk 'NR > 1 {print $2}' | sort -g |
    awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else print v[int((NR + 1) / 2)]}'
}

run() {  # name config micro_batch seq_len
  local name=$1 config=$2 out=runs/bench-$1
  rm -rf "$out"
  "$bin/trainer" --config "$config" --set run.out_dir="$out" --set train.steps="$steps" \
    --set train.micro_batch="$3" --set train.global_batch="$3" --set train.seq_len="$4" \
    --set train.eval_every=0 --set train.log_every=1 --set optim.warmup_steps=1 --set checkpoint.every=0 \
    --set data.train=data/fortunes_train.bin --set data.val=data/fortunes_val.bin \
    --set data.tokenizer= > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
  printf "%-12s %6s x %-5s %12s %8s %10s\n" "$name" "$3" "$4" \
    "$(median "$out/metrics.jsonl" tokens_per_s)" \
    "$(awk -v m="$(median "$out/metrics.jsonl" mfu)" 'BEGIN {printf "%.1f%%", 100 * m}')" \
    "$(awk -v m="$(median "$out/metrics.jsonl" gemm_share)" 'BEGIN {printf "%.1f%%", 100 * m}')"
}

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
printf "%-12s %14s %12s %8s %10s\n" config "batch x seq" "tokens/s" MFU "GEMM share"
run tiny configs/tiny.yaml 16 128
run llama-134m configs/llama-134m.yaml 1 256
