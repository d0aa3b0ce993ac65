"""Compares a dstrain training run with the same run in PyTorch (Debian's python3-torch).

dstrain trained the job in job.json and left: its initial weights (init.bin), its final weights
(final.bin) and one metrics line per optimizer step (metrics.jsonl). Here the same model is
loaded from init.bin into an independent PyTorch implementation (tools/torch_ref/gpt.py) and
trained on the same batches with torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and
DeepSpeed's WarmupCosineLR written out again in Python. PyTorch runs in float64, so the
comparison measures dstrain's fp32 error alone.

Tolerances (fp32 has a 6e-8 unit roundoff):
  - per-step loss, lr and grad-norm: relative 1e-6 (observed: loss 6e-8, grad norm 2.4e-7);
  - final weights: max |Δ| <= 2e-5 absolute (observed 1.3e-6, median 3e-9, weights up to ~1).
    Adam divides by sqrt(v), so for a weight whose gradient is near zero, fp32 rounding in the
    gradient can be amplified up to lr = 3e-3 per step: 2e-5 leaves room for that on a few
    weights, while a real bug (a wrong formula, a missed term) moves weights by ~lr per step.
Usage: parity.py JOB.json INIT.bin FINAL.bin METRICS.jsonl TEXT_FILE
"""
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../tools"))
from torch_ref import gpt as ref  # noqa: E402

LOSS_RTOL = 1e-6
WEIGHT_ATOL = 2e-5


def lr_for_step(k, base_lr, p):
    """DeepSpeed WarmupCosineLR: the optimizer step k (0-based) runs with the lr the scheduler
    set after k completed steps: 0 before the first scheduler.step(), then ratio(k - 1)."""
    if k == 0:
        return 0.0
    return ref.warmup_cosine_lr(k - 1, base_lr, p["total_num_steps"],
                                warmup=max(2, p.get("warmup_num_steps", 1000)),
                                warmup_min_ratio=p.get("warmup_min_ratio", 0.0),
                                cos_min_ratio=p.get("cos_min_ratio", 1e-4),
                                warmup_type=p.get("warmup_type", "log"))


def main():
    job_path, init_path, final_path, metrics_path, text_path = sys.argv[1:6]
    job = json.load(open(job_path))
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = ref.load_llmc(init_path, dtype=torch.float64)
    B = job["train_micro_batch_size_per_gpu"]
    gas = job["gradient_accumulation_steps"]
    T = job["data"]["seq_len"]
    steps = job["job"]["train_steps"]
    opt_p = job["optimizer"]["params"]
    sched_p = job["scheduler"]["params"]
    clip = job["gradient_clipping"]

    # Unshuffled loader: windows of T+1 bytes starting every T bytes (llm.c reads this way: each
    # window shares its last token with the next), in file order.
    tokens = np.frombuffer(open(text_path, "rb").read(), dtype=np.uint8).astype(np.int64)
    def window(w):
        return tokens[w * T:w * T + T + 1]

    opt = torch.optim.AdamW(model.parameters(), lr=opt_p["lr"], betas=tuple(opt_p["betas"]),
                            eps=opt_p["eps"], weight_decay=opt_p["weight_decay"])
    ours = [json.loads(line) for line in open(metrics_path)]
    assert len(ours) == steps, f"dstrain wrote {len(ours)} metric lines, expected {steps}"

    worst = {"loss": 0.0, "lr": 0.0, "grad_norm": 0.0}
    clipped_steps = 0
    w = 0
    for k in range(steps):
        lr = lr_for_step(k, opt_p["lr"], sched_p)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for _ in range(gas):
            batch = torch.from_numpy(np.stack([window(w + i) for i in range(B)]))
            w += B
            _, loss = model(batch[:, :-1], batch[:, 1:])
            (loss / gas).backward()
            loss_sum += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip).item()
        clipped_steps += norm > clip
        opt.step()
        mine = ours[k]
        for key, theirs in (("loss", loss_sum / gas), ("lr", lr), ("grad_norm", norm)):
            err = abs(mine[key] - theirs) / max(abs(theirs), 1e-12)
            worst[key] = max(worst[key], err)
            if err > LOSS_RTOL:
                sys.exit(f"step {k + 1}: {key} dstrain {mine[key]!r} vs torch {theirs!r} "
                         f"(relative error {err:.2e} > {LOSS_RTOL})")

    final_ours = ref.read_llmc_flat(final_path)
    final_torch = ref.flat_llmc(model)
    diff = np.abs(final_ours - final_torch)
    print(f"steps {steps}, clipped {clipped_steps}; worst relative error: "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items())
          + f"; final weights max |diff| {diff.max():.2e}, median {np.median(diff):.2e}, "
          f"max |weight| {np.abs(final_torch).max():.3f}")
    if clipped_steps == 0 or clipped_steps == steps:
        sys.exit("the run must exercise both clipped and unclipped steps; adjust the clip value")
    if diff.max() > WEIGHT_ATOL:
        i = int(diff.argmax())
        sys.exit(f"final weight {i} differs by {diff.max():.3e} > {WEIGHT_ATOL}")
    # The initial loss must be near ln(256): guards against comparing two equally broken runs.
    if not abs(ours[0]["loss"] - math.log(256)) < 0.2:
        sys.exit(f"initial loss {ours[0]['loss']} is not near ln(256)")
    print("PASS")


if __name__ == "__main__":
    main()
