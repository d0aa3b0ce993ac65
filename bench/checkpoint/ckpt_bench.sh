#!/usr/bin/env bash
# Checkpoint save and load throughput against fio's sequential write and read on the same file
# system, in one run (the target: at least 50% of fio). ckpt_bench saves one rank's state of
# a GPT (default 4 layers x 1024: 50M parameters, 605 MB of fp32 weights and Adam moments) through
# the commit protocol (write + fsync per file, manifest, renames, directory syncs) and loads it
# back (read + CRC-32C check + restore); fio writes the same number of bytes sequentially (1 MiB
# blocks, fsync at the end) and reads them back. As root, the page cache is written back and
# dropped before every timed write and read (ours and fio's alike), so each starts from the same
# empty cache. The two alternate ROUNDS times; medians.
# Usage: bench/checkpoint/ckpt_bench.sh [DIR] [ROUNDS]   (DIR default: a temp dir under /tmp)
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-$(mktemp -d /tmp/ckpt_bench.XXXXXX)}
rounds=${2:-3}
command -v fio >/dev/null || { echo "needs fio (apt-get install fio)"; exit 1; }
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //bench/checkpoint:ckpt_bench >&2
bench=$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/bench/checkpoint/ckpt_bench
drop=()
if [[ $(id -u) == 0 ]]; then drop=(--drop-caches); fi
out=$(mktemp)
for ((r = 0; r < rounds; r++)); do
  rm -rf "$dir/ckpt"
  "$bench" --dir "$dir/ckpt" "${drop[@]}" | tee -a "$out.ours" >&2
  bytes=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["bytes"])' "$out.ours")
  rm -f "$dir/fio.dat"
  if [[ $(id -u) == 0 ]]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
  fio --name=write --filename="$dir/fio.dat" --rw=write --bs=1M --size="$bytes" --end_fsync=1 \
    --output-format=json >> "$out.fio_w"
  if [[ $(id -u) == 0 ]]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
  fio --name=read --filename="$dir/fio.dat" --rw=read --bs=1M --size="$bytes" \
    --output-format=json >> "$out.fio_r"
done
python3 - "$out" <<'PY'
import json, re, statistics, sys
base = sys.argv[1]
ours = [json.loads(l) for l in open(base + ".ours")]
def fio_bw(path, kind):
    text = open(path).read()
    # fio prints one JSON document per run; split them at top-level braces.
    docs, depth, start = [], 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0: start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0: docs.append(json.loads(text[start:i + 1]))
    return [d["jobs"][0][kind]["bw_bytes"] for d in docs]
fw, fr = fio_bw(base + ".fio_w", "write"), fio_bw(base + ".fio_r", "read")
w, r = statistics.median(fw), statistics.median(fr)
# Rounds alternate ours and fio's, so per-round ratios cancel slow spells of the (shared) disk.
save_ratio = statistics.median(o["bytes"] / o["save_s"] / b for o, b in zip(ours, fw))
load_ratio = statistics.median(o["bytes"] / o["load_s"] / b for o, b in zip(ours, fr))
save = statistics.median(o["bytes"] / o["save_s"] for o in ours)
load = statistics.median(o["bytes"] / o["load_s"] for o in ours)
mb = ours[0]["bytes"] / 1e6
print(f"state {mb:.0f} MB ({ours[0]['params'] / 1e6:.1f}M parameters, fp32 weights + Adam moments), "
      f"median of {len(ours)} rounds")
print("| | dstrain MB/s | fio MB/s | ratio of medians | median per-round ratio | target |")
print("|---|---|---|---|---|---|")
print(f"| save (write + fsync + commit) | {save / 1e6:.0f} | {w / 1e6:.0f} | **{save / w:.2f}x** "
      f"| {save_ratio:.2f}x | 0.50x |")
print(f"| load (read + CRC-32C + restore) | {load / 1e6:.0f} | {r / 1e6:.0f} | **{load / r:.2f}x** "
      f"| {load_ratio:.2f}x | 0.50x |")
print("fio MB/s per round: write " + " ".join(f"{b / 1e6:.0f}" for b in fw) +
      "; read " + " ".join(f"{b / 1e6:.0f}" for b in fr))
PY
rm -f "$out" "$out.ours" "$out.fio_w" "$out.fio_r"
