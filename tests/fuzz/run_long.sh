#!/usr/bin/env bash
# Runs every fuzz target (or those named) for longer than the test suite does, by hand:
#   tests/fuzz/run_long.sh [SECONDS] [TARGET...]      (default 300 s each, every target)
# Builds the libFuzzer binaries (--config=fuzz), then fuzzes the targets one after the other,
# each from its checked-in seeds plus what earlier runs found (out/fuzz/TARGET/corpus, kept
# between runs), and prints one line per target: executions, executions per second, libFuzzer's
# coverage (cov: edges, ft: features) at the end, the corpus (inputs/bytes) and the failures
# (crash-/leak-/timeout-/oom- files in out/fuzz/TARGET/; the log is out/fuzz/TARGET/fuzz.log).
# Exit status 1 when any target failed. FUZZ_JOBS=N runs N targets at a time (default 1).
# A failing input found here belongs in corpus/TARGET/ once its bug is fixed (docs/fuzzing.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-300}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(config tcp_store token_shard checkpoint llmc_model job_validation store_service)
fi

binaries=()
for t in "${targets[@]}"; do binaries+=("//tests/fuzz:${t}_fuzzer"); done
nice -n 10 bazel build --config=fuzz "${binaries[@]}" || exit 1
bin=$(bazel info --config=fuzz bazel-bin 2>/dev/null)/tests/fuzz

run_one() {  # run_one TARGET: fuzzes it for $seconds, leaves out/fuzz/TARGET/
  local t=$1 dir="out/fuzz/$1"
  mkdir -p "$dir/corpus"
  local dict=()
  case $t in config | checkpoint | job_validation) dict=(-dict=tests/fuzz/json.dict) ;; esac
  # The same limits as the tests (run_fuzzer.sh).
  nice -n 10 "$bin/${t}_fuzzer" "$dir/corpus" "tests/fuzz/corpus/$t" "${dict[@]}" \
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="$dir/" >"$dir/fuzz.log" 2>&1
}

running=0
for t in "${targets[@]}"; do
  rm -f out/fuzz/"$t"/{crash,leak,timeout,oom,slow-unit}-*
  run_one "$t" &
  running=$((running + 1))
  if ((running >= ${FUZZ_JOBS:-1})); then
    wait -n
    running=$((running - 1))
  fi
done
wait

failed=0
printf '%-15s %12s %8s %6s %7s %16s %8s\n' target executions exec/s cov ft corpus failures
for t in "${targets[@]}"; do
  log="out/fuzz/$t/fuzz.log"
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  field() { sed -n "s/.* $1: *\([^ ]*\).*/\1/p" <<<"$last"; }
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  corpus=$(sed -n 's/.* corp: *\([^ ]*\).*/\1/p' <<<"$last")
  found=$(find "out/fuzz/$t" -maxdepth 1 -name 'crash-*' -o -maxdepth 1 -name 'leak-*' \
    -o -maxdepth 1 -name 'timeout-*' -o -maxdepth 1 -name 'oom-*' | wc -l)
  if grep -q -E '^==[0-9]+==ERROR|^SUMMARY: |deadly signal' "$log" && ((found == 0)); then
    found=1
  fi
  ((found > 0)) && failed=1
  printf '%-15s %12s %8s %6s %7s %16s %8s\n' "$t" "${execs:-?}" "${rate:-?}" \
    "$(field cov)" "$(field ft)" "${corpus:-?}" "$found"
done
exit $failed
