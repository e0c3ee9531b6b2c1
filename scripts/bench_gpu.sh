#!/usr/bin/env bash
# GPU throughput of `trainer` in bf16 mixed precision against a PyTorch reference on the same card:
# llama-134m (16 x 1024), llama-1b (4 x 2048) and llama-134m-linear (16 x 1024) on random tokens,
# then bench/torch_reference.py (134M eager and torch.compile, 1B eager) when PyTorch with CUDA is
# installed. Tokens/s and MFU are medians over the steps after the first two; peak is the
# trainer's peak_bytes at the last step (a running maximum). A benchmark, not a test: it prints
# numbers, and a failed run prints its log's tail and the script goes on with the next row.
# Runs after scripts/gpu_check.sh has configured $BUILD_DIR (it builds `trainer` if missing).
#   usage: bash scripts/bench_gpu.sh
#   env: BUILD_DIR (build-gpu), OUT (out), STEPS (12), PEAK_TFLOPS (989: H100/H200 bf16 dense),
#        RUN_TIMEOUT (300 s per run), BENCH_BUDGET_S (0: none; no run starts past it, and none
#        runs past it), TORCH_STEPS (10 timed after 3 warm-ups), TORCH_1B_COMPILE (0; 1 adds a row),
#        PROFILE (1: also time every GPU op of one 134M and one 1B step, MEMENTO_PROFILE_OPS),
#        SCRATCH (a fresh /tmp dir: data and checkpoints, deleted at exit; never under $OUT)
# Writes $OUT/bench/<run>/ (trainer.log, metrics.jsonl), $OUT/bench/torch-*.{json,log} and
# $OUT/bench_gpu_table.txt (the table printed last).
set -uo pipefail
export LC_ALL=C  # a decimal point for sort -g, awk and printf
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
OUT=${OUT:-out}
STEPS=${STEPS:-12}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
BENCH_BUDGET_S=${BENCH_BUDGET_S:-0}
TORCH_STEPS=${TORCH_STEPS:-10}
TORCH_WARMUP=3
TORCH_1B_COMPILE=${TORCH_1B_COMPILE:-0}
PROFILE=${PROFILE:-1}  # 0 skips the op profiles
VOCAB=32000
SKIP_STEPS=2  # the first steps pay for cuBLAS heuristics, the memory pool's growth and so on
mkdir -p "$OUT/bench"
OUT=$(cd "$OUT" && pwd)
bin=$BUILD_DIR/bin
if [ -n "${SCRATCH:-}" ]; then
  scratch=$SCRATCH
  mkdir -p "$scratch"
else
  scratch=$(mktemp -d /tmp/memento-bench.XXXXXX)
  trap 'rm -rf "$scratch"' EXIT
fi
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
say() { echo "[bench_gpu $(elapsed)s] $*"; }

# Seconds a run may take: RUN_TIMEOUT, cut to what is left of BENCH_BUDGET_S; 0 when none is left.
run_limit() {
  if [ "$BENCH_BUDGET_S" -le 0 ]; then echo "$RUN_TIMEOUT"; return; fi
  local left=$(( BENCH_BUDGET_S - $(elapsed) ))
  if [ $left -lt 10 ]; then echo 0; elif [ $left -lt "$RUN_TIMEOUT" ]; then echo $left;
  else echo "$RUN_TIMEOUT"; fi
}

# Median of a JSONL field over the steps after the first SKIP_STEPS ("nan" when none).
median() {
  grep -o "\"$2\": [0-9.eE+-]*" "$1" 2>/dev/null |
    awk -v skip="$SKIP_STEPS" 'NR > skip {print $2}' | sort -g | awk '{v[NR] = $1}
      END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
           else printf "%.10g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
# The field's value at the last logged step ("nan" when none).
last() {
  grep -o "\"$2\": [0-9.eE+-]*" "$1" 2>/dev/null | awk '{v = $2} END {print NR ? v : "nan"}'
}
# Number formatting that passes "nan", "-" (or any non-number) through.
num='function num(x) {return x ~ /[0-9]/ && x ~ /^[0-9.eE+-]+$/}'
fmt_int() { awk -v x="$1" "$num"' BEGIN {if (num(x)) printf "%.0f", x; else print x}'; }
fmt_pct() { awk -v x="$1" "$num"' BEGIN {if (num(x)) printf "%.1f%%", 100 * x; else print x}'; }
fmt_gib() { awk -v x="$1" "$num"' BEGIN {if (num(x)) printf "%.2f", x / 2^30; else print x}'; }
ratio() {
  awk -v a="$1" -v b="$2" "$num"' BEGIN {if (num(a) && num(b) && b > 0) printf "%.2fx", a / b;
    else print "-"}'
}

# An llm.c shard (version 1): a 256 x int32 header (magic, version, token count), then uint16
# tokens, little-endian. python3 writes it, or perl (always on Debian and Ubuntu) without it.
make_shard() {  # path tokens seed
  if ! command -v python3 > /dev/null; then
    perl -e 'my ($path, $n, $seed, $vocab) = @ARGV; srand($seed);
      open(my $f, ">:raw", $path) or die "$path: $!";
      print $f pack("l<3", 20240520, 1, $n), "\0" x (4 * 256 - 12);
      print $f pack("v*", map { int(rand($vocab)) } 1 .. $n); close($f) or die "$path: $!"' \
      "$1" "$2" "$3" "$VOCAB"
    return
  fi
  python3 - "$1" "$2" "$3" "$VOCAB" <<'EOF'
import array, random, struct, sys
path, n, seed, vocab = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
tokens = array.array("H", (rng.randrange(vocab) for _ in range(n)))
if sys.byteorder != "little":
    tokens.byteswap()
with open(path, "wb") as f:
    f.write(struct.pack("<3i", 20240520, 1, n) + bytes(4 * 256 - 12))
    f.write(tokens.tobytes())
EOF
}

declare -A ours_tps ours_mfu ours_peak ours_note
run_ours() {  # name config batch seq
  local name=$1 config=$2 B=$3 T=$4 dir=$OUT/bench/$1 limit rc
  limit=$(run_limit)
  if [ "$limit" -eq 0 ]; then
    ours_note[$name]="skipped (BENCH_BUDGET_S)"; say "$name: skipped, budget spent"; return
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  say "$name: $B x $T, $STEPS steps, timeout ${limit}s"
  # No checkpoint at the end (checkpoint.at_end=false); a timed-out run may still save one on SIGTERM.
  timeout -k 10 "$limit" "$bin/trainer" --config "$config" --set run.out_dir="$dir" \
    --set checkpoint.dir="$scratch/checkpoints-$name" --set checkpoint.every=0 \
    --set checkpoint.at_end=false \
    --set model.device=cuda --set model.dtype=bf16 --set train.peak_tflops="$PEAK_TFLOPS" \
    --set train.steps="$STEPS" --set train.micro_batch="$B" --set train.global_batch="$B" \
    --set train.seq_len="$T" --set train.eval_every=0 --set train.log_every=1 \
    --set optim.warmup_steps=1 --set data.train="$scratch/train.bin" \
    --set data.val="$scratch/val.bin" --set data.tokenizer= > "$dir/trainer.log" 2>&1
  rc=$?
  rm -rf "$scratch/checkpoints-$name"
  ours_tps[$name]=$(median "$dir/metrics.jsonl" tokens_per_s)
  ours_mfu[$name]=$(median "$dir/metrics.jsonl" mfu)
  ours_peak[$name]=$(last "$dir/metrics.jsonl" peak_bytes)
  ours_note[$name]=""
  if [ $rc -ne 0 ]; then
    ours_note[$name]="FAILED rc=$rc"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && ours_note[$name]="TIMED OUT after ${limit}s"
    say "$name: ${ours_note[$name]}; the log's tail ($dir/trainer.log):"
    tail -n 30 "$dir/trainer.log" | sed 's/^/    /'
  fi
  say "$name: $(fmt_int "${ours_tps[$name]}") tokens/s, MFU $(fmt_pct "${ours_mfu[$name]}"), peak" \
    "$(fmt_gib "${ours_peak[$name]}") GiB${ours_note[$name]:+ (${ours_note[$name]})}"
}

declare -A torch_tps torch_mfu torch_peak torch_note
run_torch() {  # preset mode (eager | compile)
  local key=$1-$2 base=$OUT/bench/torch-$1-$2 limit rc flags=()
  [ "$2" = compile ] && flags=(--compile)
  limit=$(run_limit)
  if [ "$limit" -eq 0 ]; then
    torch_note[$key]="skipped (BENCH_BUDGET_S)"; say "torch $key: skipped, budget spent"; return
  fi
  say "torch $key: timeout ${limit}s"
  timeout -k 10 "$limit" python3 bench/torch_reference.py --preset "$1" "${flags[@]}" \
    --steps "$TORCH_STEPS" --warmup "$TORCH_WARMUP" --peak-tflops "$PEAK_TFLOPS" \
    > "$base.json" 2> "$base.log"
  rc=$?
  read -r "torch_tps[$key]" "torch_mfu[$key]" "torch_peak[$key]" < <(python3 -c '
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
d = json.loads(lines[-1]) if lines else {}
print(d.get("tokens_per_s", "nan"), d.get("mfu", "nan"), d.get("peak_bytes", "nan"))' "$base.json" \
    2>/dev/null || echo nan nan nan)
  torch_note[$key]=""
  if [ $rc -ne 0 ]; then
    torch_note[$key]="FAILED rc=$rc"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && torch_note[$key]="TIMED OUT after ${limit}s"
    say "torch $key: ${torch_note[$key]}; the log's tail ($base.log):"
    tail -n 30 "$base.log" | sed 's/^/    /'
  fi
  say "torch $key: $(fmt_int "${torch_tps[$key]}") tokens/s, MFU $(fmt_pct "${torch_mfu[$key]}")," \
    "peak $(fmt_gib "${torch_peak[$key]}") GiB${torch_note[$key]:+ (${torch_note[$key]})}"
}

gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)
say "GPU: $gpu"

if [ ! -x "$bin/trainer" ] && [ "$(run_limit)" -gt 0 ]; then
  say "building trainer in $BUILD_DIR"
  if ! timeout -k 10 "$(run_limit)" cmake --build "$BUILD_DIR" -j "$(nproc)" --target trainer \
      > "$OUT/bench/build.log" 2>&1; then
    say "building trainer FAILED; the log's tail ($OUT/bench/build.log):"
    tail -n 30 "$OUT/bench/build.log"
  fi
fi

# Random tokens: every step reads 16 x 1025 tokens at most; 4 steps spare, and a val shard.
say "data: random llm.c shards (vocab $VOCAB) in $scratch"
make_shard "$scratch/train.bin" $(( (STEPS + 4) * 16 * 1024 + 1 )) 1 &&
  make_shard "$scratch/val.bin" $(( 16 * 2048 + 1 )) 2 || say "making the data FAILED"

torch_state=missing
if python3 -c "import torch" > /dev/null 2>&1; then
  torch_state=nocuda
  python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())" > /dev/null 2>&1 &&
    torch_state=ok
fi
torch_version=-
[ $torch_state = ok ] && torch_version=$(python3 -c 'import torch; print(torch.__version__)' 2>&1)
say "PyTorch: $torch_state ($torch_version)"
torch_run() { [ $torch_state = ok ] && run_torch "$@"; }

# Interleaved so that a run cut short by the budget still leaves pairs to compare, the ones the
# issue asks about first: 134M against torch.compile, 1B against eager.
run_ours llama-134m configs/llama-134m.yaml 16 1024
torch_run 134m compile
run_ours llama-1b configs/llama-1b.yaml 4 2048
torch_run 1b eager
run_ours llama-134m-linear configs/llama-134m-linear.yaml 16 1024
torch_run 134m eager
[ "$TORCH_1B_COMPILE" = 1 ] && torch_run 1b compile

# Where a step goes, op by op (MEMENTO_PROFILE_OPS: CUDA events around every op of step 3), for
# the 134M and the 1B config: profile_run name config B T.
declare -A profile_status
profile_run() {
  local name=$1 config=$2 B=$3 T=$4 limit
  profile_status[$name]="not run"
  limit=$(run_limit)
  [ "$PROFILE" != 0 ] && [ "$limit" -gt 0 ] || return 0
  local dir=$OUT/bench/profile-$name
  mkdir -p "$dir"
  say "profile: $name step 3, timeout ${limit}s"
  MEMENTO_PROFILE_OPS=3 timeout -k 10 "$limit" "$bin/trainer" --config "$config" \
    --set run.out_dir="$dir" --set checkpoint.dir="$scratch/checkpoints-profile" \
    --set checkpoint.every=0 --set checkpoint.at_end=false --set model.device=cuda \
    --set model.dtype=bf16 --set train.peak_tflops="$PEAK_TFLOPS" --set train.steps=4 \
    --set train.micro_batch="$B" --set train.global_batch="$B" --set train.seq_len="$T" \
    --set train.eval_every=0 --set train.log_every=1 --set optim.warmup_steps=1 \
    --set data.train="$scratch/train.bin" --set data.val="$scratch/val.bin" \
    --set data.tokenizer= > "$dir/trainer.log" 2>&1
  profile_status[$name]="rc=$?"
  sed -n '/GPU ops of step/,/ops total/p' "$dir/trainer.log" > "$OUT/bench/profile-$name.txt"
}
profile_run 134m configs/llama-134m.yaml 16 1024
profile_run 1b configs/llama-1b.yaml 4 2048

# The table: one row per (our run, PyTorch mode); ratio = our tokens/s over PyTorch's.
row() {  # name label torch_key ("none": no PyTorch column)
  local n=$1 k=$3 mode=${3##*-} note=${ours_note[$1]:+  ours: ${ours_note[$1]}}
  [ "$k" = none ] && mode=-
  [ -n "${torch_note[$k]:-}" ] && note="$note  torch: ${torch_note[$k]}"
  printf "%-24s %10s %6s %8s | %-8s %10s %6s %8s | %6s%s\n" "$2" \
    "$(fmt_int "${ours_tps[$n]:-nan}")" "$(fmt_pct "${ours_mfu[$n]:-nan}")" \
    "$(fmt_gib "${ours_peak[$n]:-nan}")" "$mode" "$(fmt_int "${torch_tps[$k]:--}")" \
    "$(fmt_pct "${torch_mfu[$k]:--}")" "$(fmt_gib "${torch_peak[$k]:--}")" \
    "$(ratio "${ours_tps[$n]:-nan}" "${torch_tps[$k]:-}")" \
    "$note"
}
{
  echo "GPU: $gpu; $STEPS steps per run, medians after the first $SKIP_STEPS; MFU against" \
    "$PEAK_TFLOPS TFLOP/s"
  printf "%-24s %10s %6s %8s | %-8s %10s %6s %8s | %6s\n" config "ours tok/s" MFU "peak GiB" \
    torch "tok/s" MFU "peak GiB" ratio
  if [ $torch_state = ok ]; then
    row llama-134m "134m 16x1024" 134m-eager
    row llama-134m "134m 16x1024" 134m-compile
    row llama-1b "1b 4x2048" 1b-eager
    [ "$TORCH_1B_COMPILE" = 1 ] && row llama-1b "1b 4x2048" 1b-compile
    row llama-134m-linear "134m-linear 16x1024" none
    echo "(PyTorch $torch_version measured in this run; no PyTorch reference for linear" \
      "attention; peak: ours = trainer peak_bytes," \
      "torch = max_memory_allocated)"
  else
    row llama-134m "134m 16x1024" none
    row llama-1b "1b 4x2048" none
    row llama-134m-linear "134m-linear 16x1024" none
    if [ $torch_state = missing ]; then
      echo "PyTorch not installed: ratios skipped"
    else
      echo "PyTorch installed but CUDA not available to it: ratios skipped"
    fi
    echo "No PyTorch ratios in this run; docs/performance.md has those of earlier runs (card named)."
  fi
  for name in 134m 1b; do
    echo "llama-$name bf16, GPU time per op in step 3 (profile ${profile_status[$name]}):"
    sed 's/^\[[^]]*\] *//' "$OUT/bench/profile-$name.txt" 2>/dev/null | grep -v "GPU ops of step"
  done
  echo "total $(elapsed)s; logs in $OUT/bench"
} > "$OUT/bench_gpu_table.txt"
echo
cat "$OUT/bench_gpu_table.txt"
