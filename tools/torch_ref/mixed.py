"""dstrain's 16-bit mixed precision, emulated around the PyTorch GPT of tools/torch_ref/gpt.py.

dstrain's bf16 and fp16 training (docs/configuration.md, "Mixed precision") rounds to 16 bits at
the points below and nowhere else; everything else is fp32 there and float64 here (the model's
dtype: tests/integration/torch_parity also runs it in float32), so that the replay rounds where
dstrain rounds and is exact everywhere else.
  - Parameters: the model computes with the 16-bit working copy, the rounding of the master
    weights after each optimizer step. The master weights and the Adam moments are never
    rounded (fp32 in dstrain, float64 here).
  - bf16 matrix products (every linear layer and the tied LM head; kernels/matmul
    MatmulForwardBf16 / MatmulBackwardBf16 with the bf16 weight as stored):
        forward   y  = bf16(x) · W16ᵀ + b16     the bias added to the unrounded product
        backward  dx = bf16(dy) · W16
                  dW = bf16(dy)ᵀ · bf16(x)
                  db = Σ dy                     the unrounded dy
    Products of two bf16 values are exact; dstrain accumulates them in fp32, this in float64.
  - Attention, only where dstrain's CPU ran its products on AMX (its device line says "amx";
    kernels/attention/attention_bf16.h): q, k, v and dO rounded to bf16, the probabilities
    rounded for P V and Pᵀ dO, dS rounded for dS K and dSᵀ Q; elsewhere attention is unrounded.
    fp16 runs its products on the fp32 widening of the fp16 weights: no rounding inside.
  - Gradients: within one micro-batch a module's gradients are summed unrounded (the tied wte
    gets the LM head's and the embedding's parts), then added into the 16-bit gradient buffer,
    which rounds: acc16 = round16(acc16 + g), once per parameter per micro-batch
    (worker/zero/zero_state.cc AcquireGrads/ReleaseGrads). Under fp32 accumulation
    (data_types.grad_accum_dtype "fp32", the default for bf16 at ZeRO stage 0) the buffer is
    fp32 and the sum is not rounded: acc = acc + g. The norm, the overflow check and the
    optimizer read that buffer.
  - fp16 loss scale: backward runs on loss · scale, so the 16-bit buffer holds scaled
    gradients; an inf there is an overflow, which skips the step and backs the scale off
    (DeepSpeed's DynamicLossScaler, written out below); the optimizer divides the scale out.
The casts are torch's (round to nearest, ties to even, subnormals kept). torch rounds a float64
value to fp32 on the way to 16 bits; dstrain rounds fp32 values, so that double rounding is one
dstrain has too.
"""
import math
from copy import deepcopy

import torch

BF16 = torch.bfloat16
FP16 = torch.float16


def round_to(x, dtype):
    """x rounded to the 16-bit `dtype` and widened back to x's own dtype (exact)."""
    return x.to(dtype).to(x.dtype)


class _Bf16Linear(torch.autograd.Function):
    """A linear layer as dstrain's bf16 products compute it (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x16 = round_to(x, BF16)
        w16 = round_to(weight, BF16)  # already a working copy: rounding it again is exact
        ctx.save_for_backward(x16, w16)
        ctx.has_bias = bias is not None
        y = x16 @ w16.t()
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, dy):
        x16, w16 = ctx.saved_tensors
        dy16 = round_to(dy, BF16)
        dx = dy16 @ w16
        dw = dy16.reshape(-1, dy.shape[-1]).t() @ x16.reshape(-1, x16.shape[-1])
        db = dy.reshape(-1, dy.shape[-1]).sum(0) if ctx.has_bias else None
        return dx, dw, db


class _Bf16Attention(torch.autograd.Function):
    """Causal attention with the rounding points of dstrain's bf16 attention on AMX
    (kernels/attention/attention_bf16.h): q, k, v and the output gradient rounded to bf16; the
    scores, the softmax and its backward step exact; the probabilities rounded for P V and Pᵀ dO;
    dS rounded for dS K and dSᵀ Q."""

    @staticmethod
    def forward(ctx, q, k, v, mask):
        q16, k16, v16 = round_to(q, BF16), round_to(k, BF16), round_to(v, BF16)
        s = (q16 @ k16.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        p = torch.softmax(s.masked_fill(mask == 0, float("-inf")), dim=-1)
        p16 = round_to(p, BF16)
        ctx.save_for_backward(q16, k16, v16, p, p16)
        return p16 @ v16

    @staticmethod
    def backward(ctx, dy):
        q16, k16, v16, p, p16 = ctx.saved_tensors
        dy16 = round_to(dy, BF16)
        dp = dy16 @ v16.transpose(-2, -1)
        ds = p * (dp - (p * dp).sum(-1, keepdim=True)) * (1.0 / math.sqrt(q16.shape[-1]))
        ds16 = round_to(ds, BF16)
        return ds16 @ k16, ds16.transpose(-2, -1) @ q16, p16.transpose(-2, -1) @ dy16, None


def bf16_attention(q, k, v, mask):
    """gpt.causal_attention with dstrain's AMX rounding; for GPT.attention."""
    return _Bf16Attention.apply(q, k, v, mask)


def bf16_linear(x, weight, bias=None):
    """F.linear with dstrain's bf16 rounding; for GPT.linear."""
    return _Bf16Linear.apply(x, weight, bias)


class DynamicLossScaler:
    """DeepSpeed's dynamic loss scaler as its ZeRO path uses it, written out again apart from
    dstrain's (worker/precision/loss_scaler.cc): after an overflow with hysteresis left, spend
    one; without, halve the scale (not below the floor); after `window` clean steps since the
    last overflow, double it. A static scale never changes."""

    def __init__(self, scale=1.0, dynamic=False, window=1000, hysteresis=2,
                 consecutive_hysteresis=False, min_scale=1.0):
        self.scale, self.dynamic, self.window = scale, dynamic, window
        self.hysteresis = self.cur_hysteresis = hysteresis
        self.consecutive_hysteresis, self.min_scale = consecutive_hysteresis, min_scale
        self.cur_iter, self.last_overflow_iter = 0, -1

    @classmethod
    def from_fp16_config(cls, fp16):
        """From a job's fp16 block, with DeepSpeed's defaults. Its ZeRO path hands the dynamic
        keys to the scaler only when one of them is given; otherwise the scaler starts at 2^32
        with hysteresis 1."""
        if fp16.get("loss_scale", 0) > 0:
            return cls(scale=float(fp16["loss_scale"]))
        keys = ("initial_scale_power", "loss_scale_window", "min_loss_scale", "hysteresis",
                "consecutive_hysteresis")
        if not any(k in fp16 for k in keys):
            return cls(scale=2.0 ** 32, dynamic=True, hysteresis=1)
        return cls(scale=2.0 ** fp16.get("initial_scale_power", 16), dynamic=True,
                   window=fp16.get("loss_scale_window", 1000),
                   hysteresis=fp16.get("hysteresis", 2),
                   consecutive_hysteresis=fp16.get("consecutive_hysteresis", False),
                   min_scale=float(fp16.get("min_loss_scale", 1.0)))

    def update(self, overflow):
        if not self.dynamic:
            return
        if overflow:
            if self.hysteresis == 1 or self.cur_hysteresis == 1:
                if self.scale <= self.min_scale:
                    raise RuntimeError("fp16 overflow at the minimum loss scale")
                self.scale = max(self.scale / 2, self.min_scale)
            else:
                self.cur_hysteresis -= 1
            self.last_overflow_iter = self.cur_iter
        else:
            if self.consecutive_hysteresis:
                self.cur_hysteresis = self.hysteresis
            if (self.cur_iter - self.last_overflow_iter) % self.window == 0:
                if not self.consecutive_hysteresis:
                    self.cur_hysteresis = self.hysteresis
                self.scale *= 2
        self.cur_iter += 1


class MixedPrecision:
    """Trains `model` the way dstrain's 16-bit mixed precision does: the model's own parameters
    are the 16-bit working copy (16-bit values held in the model's dtype), `master` the weights
    torch.optim.AdamW updates, in the model's dtype.

    Per micro-batch: backward(loss / gas). Per optimizer step: step(lr, clip), which returns
    (grad_norm, skipped) with DeepSpeed's rules: the norm is of the unscaled 16-bit gradients,
    the clip factor torch.nn.utils.clip_grad_norm_'s, and an inf or NaN skips the step (no
    update, gradients dropped) and is reported as an infinite norm.
    """

    def __init__(self, model, dtype, adamw, scaler=None, accumulate_fp32=False,
                 amx_attention=False):
        self.model, self.dtype = model, dtype
        self.accumulate_fp32 = accumulate_fp32
        self.scaler = scaler or DynamicLossScaler()
        self.params = list(model.parameters())
        self.master = [p.detach().clone() for p in self.params]
        self.opt = torch.optim.AdamW(self.master, **adamw)
        self.grads = [torch.zeros_like(p) for p in self.params]
        if dtype == BF16:
            model.linear = bf16_linear
            if amx_attention:  # dstrain ran attention's products on AMX too
                model.attention = bf16_attention
        self._round_working_copy()

    def _round_working_copy(self):
        with torch.no_grad():
            for p, m in zip(self.params, self.master):
                p.copy_(round_to(m, self.dtype))

    def backward(self, loss):
        self.model.zero_grad(set_to_none=True)
        (loss * self.scaler.scale).backward()
        with torch.no_grad():
            for acc, p in zip(self.grads, self.params):
                if self.accumulate_fp32:
                    acc.add_(p.grad)
                else:
                    acc.copy_(round_to(acc + p.grad, self.dtype))

    def step(self, lr, clip):
        squared = sum(float((g * g).sum()) for g in self.grads)
        skipped = not math.isfinite(squared)
        norm = math.inf if skipped else math.sqrt(squared) / self.scaler.scale
        if not skipped:
            coef = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0
            for m, g in zip(self.master, self.grads):
                m.grad = g * (coef / self.scaler.scale)
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.step()
            self._round_working_copy()
        self.scaler.update(skipped)
        for g in self.grads:
            g.zero_()
        return norm, skipped

    def master_model(self):
        """A copy of the model that holds the master weights (what `dstrain train --save-model`
        writes)."""
        copy = deepcopy(self.model)
        with torch.no_grad():
            for p, m in zip(copy.parameters(), self.master):
                p.copy_(m)
        return copy
