"""An independent PyTorch GPT-2 (the same architecture as dstrain's C++ model) and helpers.

Used as the reference in the parity test (tests/integration/torch_parity) and as the baseline in
the training benchmark (bench/train_throughput). Written for Debian's python3-torch 1.13 (no
scaled_dot_product_attention): explicit causal softmax attention, tanh-GELU, pre-LayerNorm
blocks, fused qkv, LM head tied to the token embedding, vocabulary padded to Vp with the padded
logits excluded from the softmax.

Weights load from llm.c's model file (header magic 20240326, version 3, fp32), the format
`dstrain train --save-model` and the parity driver write.
"""
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LLMC_MAGIC = 20240326


def causal_attention(q, k, v, mask):
    """softmax(q kᵀ / sqrt(hs), causal) v over (B, NH, T, hs)."""
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    att = att.masked_fill(mask == 0, float("-inf"))
    return F.softmax(att, dim=-1) @ v


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.attproj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)

    def forward(self, x, mask, linear=F.linear, attention=None):
        B, T, C = x.shape
        hs = C // self.NH
        q, k, v = linear(self.ln1(x), self.qkv.weight, self.qkv.bias).split(C, dim=2)
        q = q.view(B, T, self.NH, hs).transpose(1, 2)
        k = k.view(B, T, self.NH, hs).transpose(1, 2)
        v = v.view(B, T, self.NH, hs).transpose(1, 2)
        y = (attention or causal_attention)(q, k, v, mask[:T, :T])
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + linear(y, self.attproj.weight, self.attproj.bias)
        h = F.gelu(linear(self.ln2(x), self.fc.weight, self.fc.bias), approximate="tanh")
        return x + linear(h, self.fcproj.weight, self.fcproj.bias)


class GPT(nn.Module):
    def __init__(self, L, NH, C, V, Vp, maxT):
        super().__init__()
        self.L, self.NH, self.C, self.V, self.Vp, self.maxT = L, NH, C, V, Vp, maxT
        self.wte = nn.Parameter(torch.zeros(Vp, C))
        self.wpe = nn.Parameter(torch.zeros(maxT, C))
        self.blocks = nn.ModuleList([Block(C, NH) for _ in range(L)])
        self.lnf = nn.LayerNorm(C)
        self.register_buffer("mask", torch.tril(torch.ones(maxT, maxT)), persistent=False)
        # Every matrix product of the model, (input, weight, bias or None) -> output, as
        # F.linear: tools/torch_ref/mixed.py swaps in one that rounds where dstrain's bf16 does;
        # likewise the attention (None: causal_attention) where dstrain's runs on AMX.
        self.linear = F.linear
        self.attention = None

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.wte[idx] + self.wpe[:T]
        for b in self.blocks:
            x = b(x, self.mask, self.linear, self.attention)
        logits = self.linear(self.lnf(x), self.wte, None)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits[..., : self.V].reshape(-1, self.V), targets.reshape(-1))
        return logits, loss

    def init_gpt2(self, seed=0):
        """GPT-2 initialisation (for the benchmark; the parity test loads dstrain's weights)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * self.L) if name.endswith("proj.weight") else 0.02
                    p.normal_(0.0, std, generator=g)
                elif name.endswith("ln1.weight") or name.endswith("ln2.weight") or \
                        name == "lnf.weight":
                    p.fill_(1.0)
                else:
                    p.zero_()


def _file_order(model):
    """(parameter, shape-in-file) in llm.c's order: grouped by kind across layers."""
    blocks = model.blocks
    per_layer = [
        lambda b: b.ln1.weight, lambda b: b.ln1.bias, lambda b: b.qkv.weight,
        lambda b: b.qkv.bias, lambda b: b.attproj.weight, lambda b: b.attproj.bias,
        lambda b: b.ln2.weight, lambda b: b.ln2.bias, lambda b: b.fc.weight, lambda b: b.fc.bias,
        lambda b: b.fcproj.weight, lambda b: b.fcproj.bias,
    ]
    order = [model.wte, model.wpe]
    for get in per_layer:
        order += [get(b) for b in blocks]
    order += [model.lnf.weight, model.lnf.bias]
    return order


def load_llmc(path, dtype=torch.float32):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1024), dtype="<i4")
        if header[0] != LLMC_MAGIC or header[1] != 3:
            raise ValueError(f"{path}: not an fp32 llm.c model file")
        maxT, V, L, NH, C, Vp = (int(x) for x in header[2:8])
        data = np.frombuffer(f.read(), dtype="<f4")
    model = GPT(L, NH, C, V, Vp, maxT)
    off = 0
    with torch.no_grad():
        for p in _file_order(model):
            n = p.numel()
            p.copy_(torch.from_numpy(data[off:off + n].copy()).view_as(p))
            off += n
    if off != data.size:
        raise ValueError(f"{path}: {data.size} floats, expected {off}")
    return model.to(dtype)


def flat_llmc(model):
    """All parameters in llm.c file order, as one float64 numpy array."""
    return np.concatenate([p.detach().double().reshape(-1).numpy() for p in _file_order(model)])


def read_llmc_flat(path):
    with open(path, "rb") as f:
        f.read(1024)
        return np.frombuffer(f.read(), dtype="<f4").astype(np.float64)


# DeepSpeed's LR schedules (deepspeed/runtime/lr_schedules.py), written out again independently
# of the C++ implementation: lr for the optimizer step that follows `t` completed steps.
def warmup_gamma(t, warmup, warmup_type):
    if warmup_type == "log":
        return math.log(t + 1) / math.log(warmup)
    return t / warmup


def warmup_cosine_lr(t, base_lr, total, warmup=1000, warmup_min_ratio=0.0, cos_min_ratio=1e-4,
                     warmup_type="log"):
    if t < warmup:
        g = warmup_gamma(t, warmup, warmup_type)
        return base_lr * (warmup_min_ratio + g * (1 - warmup_min_ratio))
    ratio = (1 + math.cos(math.pi * (t - warmup + 1) / (total - warmup))) / 2
    return base_lr * max(0.0, cos_min_ratio + (1 - cos_min_ratio) * ratio)
