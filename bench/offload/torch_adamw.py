"""torch.optim.AdamW's step on the CPU, in parameters per second, for offload_bench.sh to set
beside dstrain's host AdamW (adamw_bound) on as many parameters.

    /usr/bin/python3 torch_adamw.py --params 67108864 --reps 7 --threads 2 [--foreach] [--tensors 1]

The parameters are one flat fp32 tensor by default, as ZeRO keeps a rank's partition (and as
adamw_bound updates them); --tensors K cuts them into K tensors, where foreach can batch. torch
1.13's AdamW has no fused CPU path; its default (foreach=None) is the single-tensor loop. The
first step (which allocates the moments) is not timed; prints one JSON line with the median.
"""
import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=64 << 20)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--tensors", type=int, default=1)
    ap.add_argument("--foreach", action="store_true", help="foreach=True (default: None)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [args.params // args.tensors] * args.tensors
    sizes[-1] += args.params - sum(sizes)
    params = [torch.full((n,), 0.1, requires_grad=True) for n in sizes]
    for p in params:
        p.grad = torch.full_like(p, 0.01)
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01,
                            foreach=True if args.foreach else None)
    opt.step()
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"impl": f"torch {torch.__version__}", "foreach": args.foreach,
                      "tensors": args.tensors, "threads": torch.get_num_threads(),
                      "params": args.params, "step_s": statistics.median(times)}))


if __name__ == "__main__":
    main()
