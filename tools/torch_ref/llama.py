"""A PyTorch Llama (Hugging Face LlamaForCausalLM's architecture) for the training benchmark
(bench/train_throughput): the model a PyTorch user trains, written as HF writes it, with its
q, k, v, gate and up projections as separate nn.Linear layers without biases, RMSNorm, RoPE in
the rotate_half convention, grouped-query attention repeating each kv head (HF's repeat_kv),
SiLU-gated MLP, an untied head. Attention is torch's scaled_dot_product_attention where the
torch has it (2.x, HF's "sdpa" path) and an explicit causal softmax otherwise (1.13, HF's
"eager" path). fp32.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Layer(nn.Module):
    def __init__(self, C, NH, NKV, I, eps):
        super().__init__()
        self.NH, self.NKV, self.HS = NH, NKV, C // NH
        self.input_layernorm = RMSNorm(C, eps)
        self.q_proj = nn.Linear(C, NH * self.HS, bias=False)
        self.k_proj = nn.Linear(C, NKV * self.HS, bias=False)
        self.v_proj = nn.Linear(C, NKV * self.HS, bias=False)
        self.o_proj = nn.Linear(NH * self.HS, C, bias=False)
        self.post_attention_layernorm = RMSNorm(C, eps)
        self.gate_proj = nn.Linear(C, I, bias=False)
        self.up_proj = nn.Linear(C, I, bias=False)
        self.down_proj = nn.Linear(I, C, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, C = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.NH, self.HS).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.NKV, self.HS).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.NKV, self.HS).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(self.NH // self.NKV, dim=1)
        v = v.repeat_interleave(self.NH // self.NKV, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * self.HS ** -0.5
            y = att.masked_fill(mask, float("-inf")).softmax(-1) @ v
        x = x + self.o_proj(y.transpose(1, 2).reshape(B, T, C))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, L, C, NH, NKV, I, V, max_T, theta=10000.0, eps=1e-6):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, C)
        self.layers = nn.ModuleList(Layer(C, NH, NKV, I, eps) for _ in range(L))
        self.norm = RMSNorm(C, eps)
        self.lm_head = nn.Linear(C, V, bias=False)
        HS = C // NH
        inv_freq = theta ** (-torch.arange(0, HS, 2, dtype=torch.float32) / HS)
        angles = torch.outer(torch.arange(max_T, dtype=torch.float32), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        T = idx.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool, device=idx.device).triu(1)
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, self.cos[:T], self.sin[:T], mask)
        logits = self.lm_head(self.norm(x))
        return logits, F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
