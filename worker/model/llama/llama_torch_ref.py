"""An independent PyTorch Llama (Hugging Face LlamaForCausalLM's architecture) replaying a
dstrain training run in float64, for llama_torch_parity_test.cc (docs/llama.md, "Tests").

The model is written here from the architecture, with Hugging Face's tensors kept separate
(q_proj, k_proj, v_proj, gate_proj, up_proj as their own matrices, split out of dstrain's fused
parameters by the row ranges of llama::HfTensors, which the test writes into run.json), so the
replay also checks that mapping: a wrong split would train a different model. RoPE is
rotate_half with float64 angles, GQA repeats each kv head for its n_head / n_kv_head query
heads (HF's repeat_kv), and the optimizer is torch.optim.AdamW with
torch.nn.utils.clip_grad_norm_, as tests/integration/torch_parity/parity.py uses for the GPT.

Usage: llama_torch_ref.py DIR. DIR holds run.json (config, optimizer, parameters and their
Hugging Face tensors), init.bin (dstrain's initial weights, f32, its flat layout) and
batches.bin (int32 tokens then targets of each micro-batch). Writes DIR/ref_steps.txt (per
step: mean loss and gradient norm before clipping) and DIR/ref_final.bin (float64 final weights
in dstrain's flat layout, fused again).
"""
import json
import math
import os
import sys

import numpy as np
import torch


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(T, head_dim, theta):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, D): dimension i pairs with i + D/2
    return angles.cos(), angles.sin()


def forward(w, cfg, tokens, targets):
    """Mean cross-entropy of the next-token predictions; w maps HF names to tensors."""
    B, T = tokens.shape
    C, NH, NKV = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"]
    HS, eps = C // NH, cfg["norm_eps"]
    cos, sin = rope_cos_sin(T, HS, cfg["rope_theta"])
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["n_layer"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, NH, HS).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, NKV, HS).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, NKV, HS).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(NH // NKV, dim=1)  # query head j reads kv head j // (NH / NKV)
        v = v.repeat_interleave(NH // NKV, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(HS)
        scores = scores.masked_fill(~causal, float("-inf"))
        att = torch.softmax(scores, dim=-1) @ v
        x = x + att.transpose(1, 2).reshape(B, T, C) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    logits = x @ w["lm_head.weight"].T
    return torch.nn.functional.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))


def main():
    run_dir = sys.argv[1]
    with open(os.path.join(run_dir, "run.json")) as f:
        run = json.load(f)
    cfg, opt_p = run["config"], run["optimizer"]
    torch.set_num_threads(1)
    init = np.fromfile(os.path.join(run_dir, "init.bin"), dtype=np.float32).astype(np.float64)
    params = {p["name"]: p for p in run["params"]}
    # HF tensors as row slices of dstrain's parameters (rows of `columns` values each).
    weights = {}
    for t in run["hf_tensors"]:
        p = params[t["param"]]
        columns = p["shape"][1] if len(p["shape"]) == 2 else 1
        begin = p["offset"] + t["row_begin"] * columns
        end = p["offset"] + t["row_end"] * columns
        shape = [t["row_end"] - t["row_begin"]] + p["shape"][1:]
        weights[t["hf_name"]] = torch.tensor(init[begin:end].reshape(shape), requires_grad=True)
    B, T, gas, steps = run["micro_batch"], run["seq_len"], run["gas"], run["steps"]
    batches = np.fromfile(os.path.join(run_dir, "batches.bin"), dtype=np.int32)
    batches = batches.reshape(steps * gas, 2, B, T)
    opt = torch.optim.AdamW(weights.values(), lr=opt_p["lr"], betas=tuple(opt_p["betas"]),
                            eps=opt_p["eps"], weight_decay=opt_p["weight_decay"])
    lines = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in range(gas):
            b = batches[step * gas + micro]
            loss = forward(weights, cfg, torch.from_numpy(b[0]).long(),
                           torch.from_numpy(b[1]).long())
            (loss / gas).backward()
            loss_sum += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(weights.values(), run["clip"]).item()
        opt.step()
        lines.append(f"{loss_sum / gas:.17g} {norm:.17g}\n")
    with open(os.path.join(run_dir, "ref_steps.txt"), "w") as f:
        f.writelines(lines)
    final = np.zeros(init.shape, dtype=np.float64)  # the padding between parameters stays 0
    for t in run["hf_tensors"]:
        p = params[t["param"]]
        columns = p["shape"][1] if len(p["shape"]) == 2 else 1
        begin = p["offset"] + t["row_begin"] * columns
        final[begin:begin + weights[t["hf_name"]].numel()] = \
            weights[t["hf_name"]].detach().numpy().reshape(-1)
    final.tofile(os.path.join(run_dir, "ref_final.bin"))


if __name__ == "__main__":
    main()
