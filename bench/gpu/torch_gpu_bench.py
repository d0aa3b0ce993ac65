"""GPT-2 training throughput in PyTorch on a GPU: the comparison dstrain's GPU benchmark reports.

The same model and step as bench/train_throughput/dstrain_bench (GPT-2 124M shape by default):
token and position embeddings, pre-LayerNorm blocks with causal attention through
F.scaled_dot_product_attention, a tanh-GELU MLP, the tied head, cross-entropy; bf16 autocast;
AdamW with fused=True; gradient clipping at 1.0. Eager by default, --compile for torch.compile.
Prints one JSON line with the median tokens/s over the measured steps, ms/step, MFU and peak
memory.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, NH, C, Vp, maxT):
        super().__init__()
        self.wte = nn.Embedding(Vp, C)
        self.wpe = nn.Embedding(maxT, C)
        self.blocks = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.lnf = nn.LayerNorm(C)

    def forward(self, idx, targets, V):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.lnf(x) @ self.wte.weight.t()
        return F.cross_entropy(logits[..., :V].float().reshape(-1, V), targets.reshape(-1))


def main():
    p = argparse.ArgumentParser()
    for name, default in (("layers", 12), ("embd", 768), ("heads", 12), ("vocab", 50257),
                          ("padded-vocab", 50304), ("seq", 1024), ("batch", 16), ("steps", 20),
                          ("warmup", 5)):
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=0.0)
    a = p.parse_args()
    torch.manual_seed(0)
    dev = "cuda"
    model = GPT(a.layers, a.heads, a.embd, a.padded_vocab, a.seq).to(dev)
    n_params = sum(t.numel() for t in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0, fused=True)
    step_fn = torch.compile(model) if a.compile else model
    x = torch.randint(a.vocab, (a.batch, a.seq), device=dev)
    y = torch.randint(a.vocab, (a.batch, a.seq), device=dev)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for s in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = step_fn(x, y, a.vocab)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    tokens_per_s = a.batch * a.seq / med
    flops = 6 * n_params + 12 * a.layers * a.seq * a.embd
    print(json.dumps({
        "impl": "torch-compile" if a.compile else "torch-eager", "torch": torch.__version__,
        "device": torch.cuda.get_device_name(), "tokens_per_s": round(tokens_per_s, 1),
        "step_ms": round(med * 1e3, 2), "params": n_params,
        "mfu": round(tokens_per_s * flops / (a.peak_tflops * 1e12), 4) if a.peak_tflops else 0,
        "mem_peak_bytes": torch.cuda.max_memory_allocated(), "loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
