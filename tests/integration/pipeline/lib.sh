# Shared by the pipeline tests: the job file and the runs. Needs $ws, $dstrain, $text and $out.

# job NAME WORLD STAGES [KEY=JSON...]: job.json with its data path absolute, the world size and
# the stages set, and each KEY (a dotted path) set to its JSON value, into $out/NAME.json.
job() {
  local name=$1 world=$2 stages=$3
  shift 3
  /usr/bin/python3 - "$ws/tests/integration/pipeline/job.json" "$out/$name.json" "$text" \
    "$world" "$stages" "$@" <<'PY'
import json, sys
src, dst, text, world, stages = sys.argv[1:6]
j = json.load(open(src))
j["data"]["train"] = text
j["job"]["world_size"] = int(world)
j["job"]["pipeline_stages"] = int(stages)
for kv in sys.argv[6:]:
    key, value = kv.split("=", 1)
    node = j
    *path, last = key.split(".")
    for p in path:
        node = node.setdefault(p, {})
    node[last] = json.loads(value)
json.dump(j, open(dst, "w"))
PY
}

# run NAME NPROC [STEPS]: launches $out/NAME.json (metrics, model and log beside it) and checks
# that rank 0 finished STEPS (default 20) steps.
run() {
  "$dstrain" launch --nproc "$2" "$out/$1.json" --comm-timeout 60 \
    --metrics-out "$out/$1.jsonl" --save-model "$out/$1.bin" > "$out/$1.log" 2>&1 ||
    { cat "$out/$1.log"; exit 1; }
  grep -q "^\[rank 0\] done: ${3:-20} steps" "$out/$1.log" || { cat "$out/$1.log"; exit 1; }
}

# compare REF GOT [P2P_BYTES]: the metrics of the steps both ran and the final weights agree
# within the bounds worker/pipe/executor_test.cc justifies (losses and validation losses 1e-6
# and gradient norms 1e-5 relative, weights 1e-4 in relative L2 and 1e-3 in the worst float);
# both evaluated at the same steps; with P2P_BYTES, GOT's stage 0 sent exactly that many bytes
# point to point.
compare() {
  /usr/bin/python3 - "$out/$1" "$out/$2" "${3:-}" <<'PY'
import array, json, math, os, sys
ref, got, p2p = sys.argv[1:4]
a = {r["step"]: r for r in map(json.loads, open(ref + ".jsonl"))}
b = {r["step"]: r for r in map(json.loads, open(got + ".jsonl"))}
steps = sorted(set(a) & set(b))
assert steps and max(steps) == max(a) == max(b), (sorted(a), sorted(b))
worst_loss = max(abs(a[s]["loss"] - b[s]["loss"]) / abs(a[s]["loss"]) for s in steps)
worst_norm = max(abs(a[s]["grad_norm"] - b[s]["grad_norm"]) / a[s]["grad_norm"] for s in steps)
clipped = sum(a[s]["grad_norm"] > 1.0 for s in steps)
evals = [s for s in steps if "val_loss" in a[s]]
assert evals == [s for s in steps if "val_loss" in b[s]], "evaluated at other steps"
worst_val = max([abs(a[s]["val_loss"] - b[s]["val_loss"]) / a[s]["val_loss"] for s in evals],
                default=0.0)
wa = array.array("f", open(ref + ".bin", "rb").read()[1024:])
wb = array.array("f", open(got + ".bin", "rb").read()[1024:])
assert len(wa) == len(wb), (len(wa), len(wb))
l2 = math.sqrt(sum((p - q) ** 2 for p, q in zip(wa, wb)) / sum(p * p for p in wa))
worst_w = max(abs(p - q) for p, q in zip(wa, wb))
sent = b[max(steps)].get("p2p_bytes_sent")
print(f"{os.path.basename(got)} vs {os.path.basename(ref)}, steps {steps[0]}-{steps[-1]}: "
      f"loss {worst_loss:.1e}, grad norm {worst_norm:.1e}, val loss {worst_val:.1e} at steps "
      f"{evals}, weights L2 {l2:.1e}, max {worst_w:.1e}; "
      f"clipped steps {clipped}; stage 0 sent {sent} bytes")
ok = worst_loss <= 1e-6 and worst_norm <= 1e-5 and l2 <= 1e-4 and worst_w <= 1e-3
ok = ok and worst_val <= 1e-6
ok = ok and (not p2p or sent == int(p2p))
sys.exit(0 if ok else 1)
PY
}
