"""Baseline for bench/comm_bandwidth: Gloo through Debian's torch.distributed (torch 1.13).

Spawns N processes (torch.multiprocessing) on 127.0.0.1 and times all_reduce, reduce_scatter
(torch 1.13's Gloo has no reduce_scatter: emulated the way users must, all_reduce then keep the
local chunk — reported as n/a to be fair) and all_gather on float32 buffers. Bus bandwidth uses
nccl-tests' definitions (all_reduce: bytes / time * 2(n-1)/n; the others: bytes of the full buffer
/ time * (n-1)/n). Prints one JSON line per (op, bytes).
Usage: torch_gloo_bench.py NPROC MIN_BYTES MAX_BYTES ITERS
"""
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def bus_factor(op, n):
    return 2 * (n - 1) / n if op == "allreduce" else (n - 1) / n


def run(rank, n, lo, hi, iters, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=n)
    size = lo
    while size <= hi:
        count = size // 4
        for op in ("allreduce", "allgather"):
            if op == "allreduce":
                buf = torch.ones(count)
                fn = lambda: dist.all_reduce(buf)
            else:
                chunk = max(1, count // n)
                inp = torch.ones(chunk)
                outs = [torch.empty(chunk) for _ in range(n)]
                fn = lambda: dist.all_gather(outs, inp)
            fn()
            dist.barrier()
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            times.sort()
            t = times[len(times) // 2]
            nbytes = count * 4 if op == "allreduce" else max(1, count // n) * n * 4
            if rank == 0:
                print(json.dumps({"impl": "torch-gloo", "op": op, "ranks": n, "bytes": nbytes,
                                  "time_us": t * 1e6,
                                  "busbw_gbs": nbytes / t * bus_factor(op, n) / 1e9}),
                      flush=True)
        size *= 4
    dist.destroy_process_group()


if __name__ == "__main__":
    n, lo, hi, iters = (int(x) for x in sys.argv[1:5])
    port = 29500 + os.getpid() % 1000
    mp.spawn(run, args=(n, lo, hi, iters, port), nprocs=n, join=True)
