#!/usr/bin/env bash
# The Llama decoder through the service: `dstrain submit` of a model.type "llama" job (grouped-
# query attention, ZeRO-3, bf16) on two workers, one rank each, runs to SUCCEEDED with the loss
# and the validation loss falling; its checkpoint exports as safetensors under Hugging Face's
# LlamaForCausalLM names and shapes; `dstrain estimate` describes it.
set -euo pipefail
out="$TEST_TMPDIR/llama"
mkdir -p "$out"
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/lib/service.sh"

"$dstrain" prepare --text "$text" --out "$out/data/tok" > /dev/null || fail "prepare"
$py - "$out/llama.json" "$out/data/tok" "$out/ckpt" <<'PY'
import json, sys
path, tok, ckpt = sys.argv[1:]
json.dump({
    "train_micro_batch_size_per_gpu": 4,
    "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "betas": [0.9, 0.95]}},
    "gradient_clipping": 1.0,
    "bf16": {"enabled": True},
    "zero_optimization": {"stage": 3},
    "model": {"type": "llama", "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 64,
              "intermediate_size": 160, "vocab_size": 256, "block_size": 64},
    "data": {"train": tok + "/train_*.bin", "val": tok + "/val_*.bin", "seq_len": 64},
    "job": {"name": "llama", "world_size": 2, "train_steps": 40, "eval_every": 20,
            "eval_batches": 4, "checkpoint_dir": ckpt, "checkpoint_every": 20},
}, open(path, "w"))
PY

echo "== estimate"
"$dstrain" estimate "$out/llama.json" > "$out/estimate.txt" || fail "estimate"
grep -q "the job selects stage 3; 16-bit parameters" "$out/estimate.txt" || fail "estimate text"

echo "== submit, run, SUCCEEDED"
start_coordinator
start_worker wa 1
start_worker wb 1
[[ $("$dstrain" submit "$out/llama.json" --id llama-1) == llama-1 ]] || fail "submit"
"$dstrain" watch llama-1 > "$out/watch.txt" || fail "watch llama-1 did not exit 0"
[[ $(job_field llama-1 "j['job']['state']") == JOB_STATE_SUCCEEDED ]] || fail "not SUCCEEDED"
"$dstrain" logs llama-1 > "$out/logs.txt"
grep -q "Llama L=2 H=4 KV=2 C=64 I=160 V=256" "$out/logs.txt" || fail "no Llama line in the log"
$py - "$out/logs.txt" <<'PY' || fail "the losses did not fall"
import math, re, sys
log = open(sys.argv[1]).read()
losses = [float(x) for x in re.findall(r"step +\d+/40 \| loss ([0-9.]+)", log)]
vals = [float(x) for x in re.findall(r"val loss ([0-9.]+)", log)]
print("losses", losses[:1], losses[-1:], "val", vals)
assert abs(losses[0] - math.log(256)) < 0.3, losses[0]  # a uniform start
assert len(vals) >= 2 and vals[-1] < vals[0] < math.log(256) - 1.0, vals
assert losses[-1] < losses[0] - 1.5, losses
PY

echo "== export under Hugging Face's names"
"$dstrain" export "$out/ckpt" --out "$out/llama.safetensors" > /dev/null || fail "export"
$py - "$out/llama.safetensors" <<'PY' || fail "the exported names or shapes"
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
assert header.pop("__metadata__") == {"format": "pt"}
shapes = {k: v["shape"] for k, v in header.items()}
want = {"model.embed_tokens.weight": [256, 64], "model.norm.weight": [64],
        "lm_head.weight": [256, 64]}
for l in range(2):
    p = f"model.layers.{l}."
    want.update({p + "input_layernorm.weight": [64], p + "post_attention_layernorm.weight": [64],
                 p + "self_attn.q_proj.weight": [64, 64], p + "self_attn.k_proj.weight": [32, 64],
                 p + "self_attn.v_proj.weight": [32, 64], p + "self_attn.o_proj.weight": [64, 64],
                 p + "mlp.gate_proj.weight": [160, 64], p + "mlp.up_proj.weight": [160, 64],
                 p + "mlp.down_proj.weight": [64, 160]})
assert shapes == want, set(shapes.items()) ^ set(want.items())
end = max(v["data_offsets"][1] for v in header.values())
assert 8 + n + end == len(data)
PY
echo PASS
