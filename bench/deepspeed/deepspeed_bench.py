"""bench/deepspeed: dstrain against DeepSpeed from PyPI on the same GPT, side by side.

For every world size (1, 2 processes) x ZeRO stage (0-3) x precision (fp32, bf16) asked for,
trains the same GPT (L4 C256 NH4 V8192 T256, global batch 8 sequences by default) in DeepSpeed
(ds_train.py under torchrun: DS_ACCELERATOR=cpu, gloo, AdamW as DeepSpeed picks it) and in
dstrain (`dstrain launch --nproc W` on a generated job, its metrics file), alternating the two
ROUNDS times, and prints per configuration the median tokens/s of each, their ratio, and the
largest rank's peak resident memory (ru_maxrss of the reaped processes) of each; then the
machine's CPU flags and, from one extra DeepSpeed bf16 step with ONEDNN_VERBOSE=1, which
kernels oneDNN chose. Each process gets cores / W threads on both sides.

Usage (deepspeed_bench.sh makes the environment): deepspeed_bench.py --python VENV_PYTHON
  --dstrain DSTRAIN [--worlds 1,2] [--stages 0,1,2,3] [--precisions fp32,bf16] [--rounds 3]
  [--steps 8]
"""
import argparse
import collections
import json
import os
import resource  # noqa: F401 (used by MEASURE in a child)
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "../../deploy/local/demo/data")


# Runs argv[1:] and prints, last on stderr, the largest peak RSS of every process it started
# (RUSAGE_CHILDREN of a fresh process: the kernel carries each reaped process's own and its
# descendants' maximum up to the reaper).
MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
           "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
           "file=sys.stderr); sys.exit(r)")


def run_measured(cmd, env=None):
    """(completed process, the largest peak RSS in bytes of the processes `cmd` started)."""
    out = subprocess.run([sys.executable, "-c", MEASURE] + cmd, env=env, capture_output=True,
                         text=True)
    rss = [l for l in out.stderr.splitlines() if l.startswith("peak_rss_kb ")]
    return out, int(rss[-1].split()[1]) * 1024 if rss else 0


def run_deepspeed(a, world, stage, precision):
    cores = os.cpu_count()
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS=str(max(1, cores // world)))
    cmd = [os.path.join(os.path.dirname(a.python), "torchrun"), "--nproc_per_node", str(world),
           os.path.join(HERE, "ds_train.py"), "--batch", str(a.global_batch // world),
           "--steps", str(a.steps), "--stage", str(stage), "--precision", precision]
    out, rss = run_measured(cmd, env)
    if out.returncode != 0:
        # DeepSpeed's own failure (its CPU bf16 path aborts on some machines): reported in the
        # table and on stderr, and the other configurations still run.
        print(f"deepspeed failed: {' '.join(cmd)}\n{out.stderr[-3000:]}", file=sys.stderr)
        return None, rss, f"failed (exit {out.returncode})"
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    r = json.loads(line)
    return r["tokens_per_s"], rss, r["optimizer"]


def run_dstrain(a, world, stage, precision, work):
    job = {
        "train_micro_batch_size_per_gpu": a.global_batch // world,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.0}},
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": precision == "bf16"},
        "model": {"type": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 256, "vocab_size": 8192,
                  "block_size": 256},
        "data": {"train": os.path.join(DATA, "train_*.bin"), "seq_len": 256},
        "job": {"name": "bench", "train_steps": a.steps + 2, "eval_every": 0},
    }
    path = os.path.join(work, "job.json")
    metrics = os.path.join(work, "metrics.jsonl")
    json.dump(job, open(path, "w"))
    out, rss = run_measured([a.dstrain, "launch", "--nproc", str(world), path, "--metrics-out",
                             metrics])
    if out.returncode != 0:
        sys.exit(f"dstrain failed:\n{out.stderr[-3000:]}\n{out.stdout[-2000:]}")
    rows = [json.loads(l) for l in open(metrics)][2:]  # the first 2 steps warm up, as DeepSpeed's
    return statistics.median(r["tokens_per_s"] for r in rows), rss


def onednn_kernels(a):
    env = dict(os.environ, DS_ACCELERATOR="cpu", ONEDNN_VERBOSE="1", OMP_NUM_THREADS=str(os.cpu_count()))
    cmd = [os.path.join(os.path.dirname(a.python), "torchrun"), "--nproc_per_node", "1",
           os.path.join(HERE, "ds_train.py"), "--steps", "1", "--warmup", "0", "--precision", "bf16"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    kinds = collections.Counter()
    isa = ""
    for l in (out.stdout + out.stderr).splitlines():
        if not l.startswith("onednn_verbose"):
            continue
        f = l.split(",")
        if "isa:" in l:
            isa = l.split("isa:", 1)[1]
        if "exec" in f and f.index("exec") + 3 < len(f):
            i = f.index("exec")
            kinds[f"{f[i + 2]} {f[i + 3]}"] += 1  # primitive kind, implementation
    return isa, kinds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--python", required=True)
    p.add_argument("--dstrain", required=True)
    p.add_argument("--worlds", default="1,2")
    p.add_argument("--stages", default="0,1,2,3")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--global-batch", type=int, default=8)
    a = p.parse_args()
    flags = open("/proc/cpuinfo").read().split("flags\t\t: ")[1].split("\n")[0].split()
    model = [l.split(": ", 1)[1] for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
    print(f"dstrain against DeepSpeed, GPT L4 C256 NH4 V8192 T256, global batch {a.global_batch};"
          f" {os.cpu_count()} cores, {model}; medians of {a.rounds} alternating rounds")
    print("CPU features: " + " ".join(sorted(f for f in flags if f.startswith(("avx", "amx")))))
    print()
    print("| world | ZeRO | precision | dstrain tok/s | DeepSpeed tok/s | ratio | peak RSS dstrain / DeepSpeed (MB) | DeepSpeed optimizer |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for world in map(int, a.worlds.split(",")):
            for stage in map(int, a.stages.split(",")):
                for precision in a.precisions.split(","):
                    ours, theirs, ours_rss, theirs_rss = [], [], [], []
                    opt = ""
                    for _ in range(a.rounds):
                        t, rss = run_dstrain(a, world, stage, precision, work)
                        ours.append(t)
                        ours_rss.append(rss)
                        t, rss, opt = run_deepspeed(a, world, stage, precision)
                        if t is None:
                            break
                        theirs.append(t)
                        theirs_rss.append(rss)
                    o = statistics.median(ours)
                    if len(theirs) < len(ours):
                        print(f"| {world} | {stage} | {precision} | {o:,.0f} | DeepSpeed {opt} | "
                              f"- | {max(ours_rss) / 1e6:,.0f} / - | - |", flush=True)
                        continue
                    d = statistics.median(theirs)
                    print(f"| {world} | {stage} | {precision} | {o:,.0f} | {d:,.0f} | **{o / d:.2f}x** "
                          f"| {max(ours_rss) / 1e6:,.0f} / {max(theirs_rss) / 1e6:,.0f} | {opt} |",
                          flush=True)
    print()
    isa, kinds = onednn_kernels(a)
    print(f"oneDNN in one DeepSpeed bf16 step (ONEDNN_VERBOSE): isa {isa or 'not reported'}; " +
          ("; ".join(f"{k} x{n}" for k, n in kinds.most_common(8)) or "no primitive ran"))


if __name__ == "__main__":
    main()
