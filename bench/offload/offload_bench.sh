#!/usr/bin/env bash
# Optimizer offload to NVMe (issue 17), in three parts, each printed as a table:
#   io     the swap engine's sequential write and read of one file (swap_bandwidth) against
#          `fio --direct=1 --ioengine=io_uring` on the same path with the same block size, queue
#          depth and jobs (fio's jobs split the file as the engine's threads do), alternating,
#          the first of each pair swapped every round; medians. Target: >= 80% of fio.
#   adamw  the host AdamW (fp32 and bf16 mixed) in parameters/s against the memory bandwidth
#          measured in the same run (adamw_bound: bound = best of copy/triad/update GB/s / 28 B),
#          target >= 90%; and against torch.optim.AdamW (Debian's torch 1.13, all cores), >= 5x.
#   train  step time of the tiny model and GPT-2 124M with offload_optimizer none / cpu / nvme,
#          and the share of the swap I/O hidden behind the update (offload_train.py); with
#          --train-args "--params" also stage 3 with the parameters on NVMe beside the state.
# Usage: bench/offload/offload_bench.sh [--part all|io|adamw|train] [--dir DIR] [--bytes N]
#          [--rounds N] [--params N] [--reps N] [--models tiny,gpt2] [--steps N]
#          [--train-rounds N] [--train-args "ARGS"]   (ARGS: more offload_train.py flags, e.g.
#          "--precision bf16 --sub-group-size 4194304 --aio-queue-depth 32")
# DIR (default: a new directory under /tmp) holds the test file, the swap files and the jobs;
# it must take O_DIRECT files. A benchmark, not a test: run it on an otherwise idle machine
# (all three parts with --rounds 5: about 7 minutes on the 2-core dev machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
part=all dir="" bytes=$((1 << 30)) rounds=3 params=$((64 << 20)) reps=7 models=tiny,gpt2
steps=5 train_rounds=3 train_args=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --part) part=$2 ;;
    --dir) dir=$2 ;;
    --bytes) bytes=$2 ;;
    --rounds) rounds=$2 ;;
    --params) params=$2 ;;
    --reps) reps=$2 ;;
    --models) models=$2 ;;
    --steps) steps=$2 ;;
    --train-rounds) train_rounds=$2 ;;
    --train-args) train_args=$2 ;;
    *) echo "unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
  esac
  shift 2
done
case $part in
  all | io | adamw | train) ;;
  *) echo "--part: all, io, adamw or train" >&2; exit 2 ;;
esac
dir=${dir:-$(mktemp -d /tmp/offload_bench.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cores=$(nproc)

source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //bench/offload:swap_bandwidth \
  //bench/offload:adamw_bound //client/cli:dstrain >&2
bin=$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)

# The machine, as the kernels and the engine see it at run time.
cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' |
  grep -xE 'avx2|avx512f|avx512bw|avx512_bf16|avx512_fp16|amx_tile|amx_bf16|amx_int8' |
  tr '\n' ' ')
# The swap dir's file system and the device under it (its driver: virtio_blk, nvme, ...).
source_dev=$(findmnt -no SOURCE -T "$dir" 2>/dev/null || echo "?")
dev=/sys/class/block/${source_dev#/dev/}
if [[ -e $dev/partition ]]; then dev=$(dirname "$(readlink -f "$dev")"); fi
driver=""
if [[ -e $dev/device/driver ]]; then driver=$(basename "$(readlink -f "$dev/device/driver")"); fi
llc=$(cat /sys/devices/system/cpu/cpu0/cache/index3/size 2>/dev/null || echo "?")
echo "machine: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1), $cores cores," \
  "L3 $llc, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
  "Linux $(uname -r); flags: ${cpu_flags% }"
fs=$(df -T "$dir" | awk 'NR == 2 {print $2}')
echo "swap dir: $dir on $fs ($source_dev${driver:+, $driver}); $(date -u +%F)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ $part == all || $part == io ]]; then
  command -v fio >/dev/null || { echo "needs fio (apt-get install fio)" >&2; exit 1; }
  file=$dir/swap_bandwidth.dat
  ours() {  # block depth threads round
    "$bin/bench/offload/swap_bandwidth" --file "$file" --bytes "$bytes" --block-size "$1" \
      --queue-depth "$2" --threads "$3" >> "$tmp/ours.jsonl"
  }
  fio_run() {  # block depth jobs out.json: write the file from scratch, then read it
    rm -f "$file"
    fio --filename="$file" --direct=1 --ioengine=io_uring --bs="$1" --iodepth="$2" \
      --numjobs="$3" --size=$((bytes / $3)) --offset_increment=$((bytes / $3)) \
      --group_reporting --output-format=json --name=write --rw=write \
      --name=read --stonewall --rw=read > "$4"
    rm -f "$file"
  }
  # fio's jobs each move bytes/threads, side by side in the file (two sequential streams); the
  # engine's threads instead take turns at one transfer's blocks (one stream, threads x depth
  # deep), so for threads > 1 fio also runs that pattern: one job at depth x threads.
  theirs() {  # block depth threads round
    fio_run "$1" "$2" "$3" "$tmp/fio_$1_$2_$3_$4.json"
    if (($3 > 1)); then fio_run "$1" $(($2 * $3)) 1 "$tmp/fio1_$1_$2_$3_$4.json"; fi
  }
  for bs in 131072 1048576; do
    for qd in 8 32; do
      for th in 1 2; do
        for ((r = 0; r < rounds; r++)); do
          if ((r % 2 == 0)); then
            ours $bs $qd $th && theirs $bs $qd $th $r
          else
            theirs $bs $qd $th $r && ours $bs $qd $th
          fi
        done
      done
    done
  done
  echo
  echo "## (a) swap engine against fio: $((bytes >> 20)) MiB file, GB/s (10^9 B/s), median of" \
    "$rounds alternating rounds (ratio: of the medians; in brackets the rounds' lowest and highest)"
  /usr/bin/python3 - "$tmp" "$rounds" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
ours = {}
for line in open(f"{tmp}/ours.jsonl"):
    o = json.loads(line)
    ours.setdefault((o["block_size"], o["queue_depth"], o["threads"]), []).append(o)

def fio(prefix, bs, qd, th):
    jobs = [json.load(open(f"{tmp}/{prefix}_{bs}_{qd}_{th}_{r}.json"))["jobs"]
            for r in range(rounds)]
    return ([j[0]["write"]["bw_bytes"] / 1e9 for j in jobs],
            [j[1]["read"]["bw_bytes"] / 1e9 for j in jobs])

def cell(mine, theirs):
    m, t = statistics.median(mine), statistics.median(theirs)
    per_round = [a / b for a, b in zip(mine, theirs)]
    return m / t, f"{m:.2f} | {t:.2f} | **{m / t:.2f}** ({min(per_round):.2f}-{max(per_round):.2f})"

def table(prefix, title, configs):
    print(title)
    print("| block | queue depth | threads | write dstrain | write fio | ratio | read dstrain "
          "| read fio | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst = 9.0
    for bs, qd, th in configs:
        runs = ours[(bs, qd, th)]
        fw, fr = fio(prefix, bs, qd, th)
        rw, w = cell([o["write_gb_s"] for o in runs], fw)
        rr, r = cell([o["read_gb_s"] for o in runs], fr)
        worst = min(worst, rw, rr)
        print(f"| {bs >> 10} KiB | {qd} | {th} | {w} | {r} |")
    return worst

worst = table("fio", "fio with numjobs = threads, iodepth = queue depth:", list(ours))
print(f"\nbackend {next(iter(ours.values()))[0]['backend']}; lowest ratio {worst:.2f} "
      "(target >= 0.80)\n")
table("fio1", "threads > 1 against fio's one job at iodepth = queue depth x threads (the "
      "engine's own pattern: one stream):", [k for k in ours if k[2] > 1])
PY
fi

if [[ $part == all || $part == adamw ]]; then
  "$bin/bench/offload/adamw_bound" --params "$params" --reps "$reps" > "$tmp/adamw.json"
  for variant in "" --foreach; do
    /usr/bin/python3 bench/offload/torch_adamw.py --params "$params" --reps "$reps" \
      --threads "$cores" $variant >> "$tmp/torch.jsonl"
  done
  echo
  echo "## (b) host AdamW, $((params >> 20))Mi parameters, $cores threads, median of $reps"
  /usr/bin/python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
a = json.load(open(f"{tmp}/adamw.json"))
n = a["params"]
bws = {"copy (8 B/elem)": a["copy_gb_s"], "triad (12 B/elem)": a["triad_gb_s"],
       "update (28 B/elem, AdamW's pattern)": a["update_gb_s"]}
best = max(bws, key=bws.get)
bound = bws[best] * 1e9 / 28
print("| memory kernel | GB/s |")
print("|---|---|")
for k, v in bws.items():
    print(f"| {k} | {v:.2f}{' (bound)' if k == best else ''} |")
triad = a["triad_gb_s"] * 1e9 / 28
print(f"\nDRAM bound: {bws[best]:.2f} GB/s / 28 B = {bound / 1e6:.0f} M params/s (STREAM's "
      f"triad alone, which leaves out its stores' read-for-ownership: {triad / 1e6:.0f} M)\n")
print("| AdamW | params/s | GB/s at 28 B/param | of DRAM bound | of triad bound | vs best torch |")
print("|---|---|---|---|---|---|")
torch = [json.loads(l) for l in open(f"{tmp}/torch.jsonl")]
best_torch = max(n / t["step_s"] for t in torch)
for name, secs in [(f"dstrain fp32 ({a['isa']})", a["adamw_fp32_s"]),
                   (f"dstrain bf16 + fp32 master ({a['isa']})", a["adamw_bf16_s"])]:
    print(f"| {name} | {n / secs / 1e6:.0f} M | {28 * n / secs / 1e9:.2f} | "
          f"**{n / secs / bound:.0%}** | {n / secs / triad:.0%} | "
          f"**{n / secs / best_torch:.1f}x** |")
for t in torch:
    name = f"{t['impl']} AdamW foreach={'True' if t['foreach'] else 'None (single-tensor)'}"
    print(f"| {name}, {t['threads']} threads | {n / t['step_s'] / 1e6:.0f} M | "
          f"{28 * n / t['step_s'] / 1e9:.2f} | {n / t['step_s'] / bound:.0%} | "
          f"{n / t['step_s'] / triad:.0%} | |")
print("\ntargets: >= 90% of the DRAM bound, >= 5x torch.optim.AdamW")
PY
fi

if [[ $part == all || $part == train ]]; then
  echo
  echo "## (c) training step time, optimizer state in memory / cpu / nvme"
  read -ra extra <<< "$train_args"  # word-split on purpose: several flags in one argument
  /usr/bin/python3 bench/offload/offload_train.py --dstrain "$bin/client/cli/dstrain" \
    --dir "$dir/train" --models "$models" --steps "$steps" --rounds "$train_rounds" \
    --threads "$cores" "${extra[@]}"
fi
