"""Training step time with the optimizer state in memory, "offloaded" to the CPU and swapped to
NVMe (zero_optimization.offload_optimizer.device none / cpu / nvme), through `dstrain train` on
one rank at ZeRO stage 1, for offload_bench.sh; with --params also at stage 3 with nothing
offloaded ("s3-none") and with both the optimizer state and the parameters on NVMe
("s3-nvme+params", offload_param "nvme"). Prints a Markdown table.

    python3 offload_train.py --dstrain PATH --dir WORKDIR [--models tiny,gpt2] [--steps 5]

Models: "tiny" is bench/train_throughput's (a) (4 layers x 256, vocab 8192, T 256, B 8, 5.3M
parameters), "gpt2" its (b), GPT-2 124M's shape (12 x 768, vocab 50257, T 64, B 4). Tokens are
random (one llm.c shard made here), fp32 by default. The modes alternate within each round so a
slow spell of the machine hits them alike; each reports the median step_ms of its measured steps
(the metrics JSONL, after --warmup steps) and the table the median over rounds.

The share of I/O hidden: each step moves swap_bytes (metrics: the optimizer's file in and out,
and with parameters on NVMe the gathers' reads and the update's reads and writes of theirs). Its
I/O time is estimated from the bandwidths the run's own start-up self-test logged (same engine,
aio settings and path), as half reads and half writes: io_s = swap_bytes / 2 / read_bw +
swap_bytes / 2 / write_bw (exact for the optimizer's file; the parameters' traffic is more reads
than writes); hidden = 1 - swap_wait_s / io_s, where swap_wait_s (metrics) is what the step waited
for its I/O. The worker reports no per-step I/O
busy time, so this is an estimate; "exposed" is the step time over the no-offload run's instead.
"""
import argparse
import json
import os
import random
import re
import statistics
import struct
import subprocess
import sys

MODELS = {
    # name: (n_layer, n_head, n_embd, vocab, block_size, seq_len, batch, sub_group_size)
    "tiny": (4, 4, 256, 8192, 256, 256, 8, 1 << 20),
    "gpt2": (12, 12, 768, 50257, 1024, 64, 4, 8 << 20),
}
MODES = ["none", "cpu", "nvme"]
PARAM_MODES = ["s3-none", "s3-nvme+params"]
SELF_TEST = re.compile(r"offload: optimizer state on NVMe at .*self-test ([\d.]+) MB: "
                       r"write ([\d.]+) MB/s, read ([\d.]+) MB/s")


def write_shard(path, vocab, ntok, seed=1):
    """An llm.c token shard (worker/data/token_shard.h) of random tokens below `vocab`."""
    rng = random.Random(seed)
    header = [20240520, 1, ntok] + [0] * 253
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack(f"<{ntok}H", *(rng.randrange(vocab) for _ in range(ntok))))


def make_job(args, model, mode, shard, path):
    L, H, C, V, block, T, B, group = MODELS[model]
    zero = {"stage": 3 if mode.startswith("s3-") else 1,
            "sub_group_size": args.sub_group_size or group}
    device = mode[3:] if mode.startswith("s3-") else mode
    if device.startswith("nvme"):
        zero["offload_optimizer"] = {
            "device": "nvme", "nvme_path": args.nvme_path, "buffer_count": args.buffer_count,
            "pipeline_read": True, "pipeline_write": True}
    elif device != "none":
        zero["offload_optimizer"] = {"device": device}
    if device == "nvme+params":
        zero["offload_param"] = {"device": "nvme", "nvme_path": args.nvme_path}
    job = {
        "train_micro_batch_size_per_gpu": B, "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.0}},
        "zero_optimization": zero,
        "aio": {"block_size": args.aio_block_size, "queue_depth": args.aio_queue_depth,
                "intra_op_parallelism": args.aio_threads, "single_submit": False,
                "overlap_events": True},
        "model": {"type": "gpt", "n_layer": L, "n_head": H, "n_embd": C, "vocab_size": V,
                  "block_size": block},
        "data": {"train": shard, "seq_len": T},
        "job": {"name": f"offload-bench-{model}", "train_steps": args.warmup + args.steps,
                "eval_every": 0},
    }
    if args.precision == "bf16":
        job["bf16"] = {"enabled": True}
    with open(path, "w") as f:
        json.dump(job, f, indent=1)


def run(args, model, mode, shard):
    base = os.path.join(args.dir, f"{model}_{mode}")
    make_job(args, model, mode, shard, base + ".json")
    metrics = base + ".jsonl"
    if os.path.exists(metrics):
        os.remove(metrics)
    with open(base + ".log", "w") as log:
        rc = subprocess.call([args.dstrain, "train", base + ".json", "--metrics-out", metrics,
                              "--threads", str(args.threads)], stdout=log, stderr=log)
    if rc != 0:
        sys.exit(f"{model} {mode}: dstrain train exited {rc}; see {base}.log")
    lines = [json.loads(l) for l in open(metrics)][args.warmup:]
    out = {"step_s": statistics.median(l["step_ms"] for l in lines) / 1e3}
    if "nvme" in mode:
        m = SELF_TEST.search(open(base + ".log").read())
        if not m:
            sys.exit(f"{model} {mode}: no self-test line in {base}.log")
        write_bw, read_bw = float(m.group(2)) * 1e6, float(m.group(3)) * 1e6
        moved = statistics.median(l["swap_bytes"] for l in lines)
        out.update(nvme_bytes=lines[0]["nvme_bytes"], write_bw=write_bw, read_bw=read_bw,
                   wait_s=statistics.median(l["swap_wait_s"] for l in lines),
                   io_s=moved / 2 / read_bw + moved / 2 / write_bw)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dstrain", required=True)
    ap.add_argument("--dir", required=True, help="job files, data, logs")
    ap.add_argument("--nvme-path", help="default: DIR/nvme")
    ap.add_argument("--models", default="tiny,gpt2")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--sub-group-size", type=int, default=0, help="default: per model")
    ap.add_argument("--buffer-count", type=int, default=4)
    ap.add_argument("--aio-block-size", type=int, default=1 << 20)
    ap.add_argument("--aio-queue-depth", type=int, default=8)
    ap.add_argument("--aio-threads", type=int, default=1)
    ap.add_argument("--params", action="store_true",
                    help="also stage 3 without offload and with optimizer and parameters on NVMe")
    args = ap.parse_args()
    modes = MODES + (PARAM_MODES if args.params else [])
    args.nvme_path = args.nvme_path or os.path.join(args.dir, "nvme")
    os.makedirs(args.nvme_path, exist_ok=True)
    print(f"| model | params | offload | step s (median) | vs none | swap file MB | self-test "
          f"write / read MB/s | I/O per step s (est.) | waited s | hidden | exposed s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        L, H, C, V, block, T, B, group = MODELS[model]
        shard = os.path.join(args.dir, f"tokens_{model}.bin")
        ntok = (args.warmup + args.steps + 2) * B * T + 1
        if not os.path.exists(shard) or os.path.getsize(shard) != 1024 + 2 * ntok:
            write_shard(shard, V, ntok)
        rounds = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode in modes:
                rounds[mode].append(run(args, model, mode, shard))
        med = {mode: statistics.median(r["step_s"] for r in rounds[mode]) for mode in modes}
        params = 12 * L * C * C + 13 * L * C + (V + block) * C + 2 * C  # GPT-2's count, unpadded
        for mode in modes:
            base = "s3-none" if mode.startswith("s3-") else "none"
            cells = ["", "", "", "", "", ""]
            if "nvme" in mode:
                rs = rounds[mode]
                io = statistics.median(r["io_s"] for r in rs)
                wait = statistics.median(r["wait_s"] for r in rs)
                cells = [f"{rs[0]['nvme_bytes'] / 1e6:.0f}",
                         f"{statistics.median(r['write_bw'] for r in rs) / 1e6:.0f} / "
                         f"{statistics.median(r['read_bw'] for r in rs) / 1e6:.0f}",
                         f"{io:.3f}", f"{wait:.3f}", f"**{max(0.0, 1 - wait / io):.0%}**",
                         f"{med[mode] - med[base]:.3f}"]
            print(f"| {model} | {params / 1e6:.1f}M | {mode} | {med[mode]:.3f} | "
                  f"{med[mode] / med[base]:.2f}x | " + " | ".join(cells) + " |")
    print(f"\n{args.precision}, ZeRO stage 1 (s3-: stage 3, against s3-none) on 1 rank, "
          f"{args.threads} threads; steps: "
          f"{args.warmup} warm-up + {args.steps} measured, {args.rounds} round(s); nvme: "
          f"nvme_path {args.nvme_path}, buffer_count {args.buffer_count}, pipeline_read and "
          f"pipeline_write on, aio block {args.aio_block_size}, queue depth "
          f"{args.aio_queue_depth}, {args.aio_threads} thread(s); sub_group_size "
          + ", ".join(f"{m} {args.sub_group_size or MODELS[m][7]}"
                      for m in args.models.split(",")))


if __name__ == "__main__":
    main()
