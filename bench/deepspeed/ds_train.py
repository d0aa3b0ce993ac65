"""DeepSpeed's side of bench/deepspeed: the GPT of tools/torch_ref/gpt.py (the architecture
dstrain trains) under deepspeed.initialize on the CPU accelerator (DS_ACCELERATOR=cpu, gloo),
forward + backward + step on a fixed random batch per rank, as dstrain_bench times it.

Run by bench/deepspeed/deepspeed_bench.sh under torchrun (one process per rank). Prints, on rank
0, one JSON line: median tokens/s over the measured steps (global: all ranks' tokens), the
median step time, and the peak resident memory of every rank (ru_maxrss).
Arguments: --layers --embd --heads --vocab --seq --batch (per rank) --steps --warmup --stage
--precision fp32|bf16.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tools"))
from torch_ref import gpt as ref  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    for name, default in (("layers", 4), ("embd", 256), ("heads", 4), ("vocab", 8192),
                          ("seq", 256), ("batch", 8), ("steps", 8), ("warmup", 2),
                          ("stage", 0)):
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    a = p.parse_args()
    import deepspeed  # after argparse: its import is slow

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    Vp = (a.vocab + 127) // 128 * 128
    model = ref.GPT(a.layers, a.heads, a.embd, a.vocab, Vp, a.seq)
    model.init_gpt2(0)
    config = {
        "train_micro_batch_size_per_gpu": a.batch,
        "gradient_accumulation_steps": 1,
        # AdamW as DeepSpeed picks it for this config (its FusedAdam, or on the CPU accelerator
        # the compiled DeepSpeedCPUAdam where it builds).
        "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.0}},
        "zero_optimization": {"stage": a.stage},
        "bf16": {"enabled": a.precision == "bf16"},
        "steps_per_print": 1 << 30,
    }
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                                   config=config)
    g = torch.Generator().manual_seed(1 + rank)
    x = torch.randint(a.vocab, (a.batch, a.seq), generator=g)
    y = torch.randint(a.vocab, (a.batch, a.seq), generator=g)
    times = []
    for s in range(a.warmup + a.steps):
        dist.barrier()
        t0 = time.perf_counter()
        _, loss = engine(x, y)
        engine.backward(loss)
        engine.step()
        dist.barrier()
        t1 = time.perf_counter()
        if s >= a.warmup:
            times.append(t1 - t0)
    times.sort()
    med = times[len(times) // 2]
    rss = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024], dtype=torch.int64)
    all_rss = [torch.zeros_like(rss) for _ in range(world)]
    dist.all_gather(all_rss, rss)
    if rank == 0:
        print(json.dumps({"impl": "deepspeed", "deepspeed": deepspeed.__version__,
                          "torch": torch.__version__, "optimizer": type(optimizer).__name__,
                          "tokens_per_s": round(world * a.batch * a.seq / med, 1),
                          "step_s": round(med, 4), "peak_rss_bytes": [int(r) for r in all_rss]}))


if __name__ == "__main__":
    main()
