"""Training throughput of the same GPT (or, with --model llama, Llama) in PyTorch, fp32: Debian's 1.13 (/usr/bin/python3) or a 2.x
from PyPI (the virtual environment train_throughput.sh makes).

Forward + zero_grad + backward + AdamW step on a fixed random batch; prints one JSON line with
the median tokens/s over the measured steps. --threads is torch.set_num_threads. Debian's 1.13
runs its GEMMs in OpenBLAS's own threads, so it is fastest with OPENBLAS_NUM_THREADS=<cores> and
--threads 1; 2.x runs MKL and oneDNN in torch's threads, and train_throughput.sh tries each count.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tools"))
from torch_ref import gpt as ref  # noqa: E402
from torch_ref import llama  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    for name, default in (("layers", 4), ("embd", 256), ("heads", 4), ("vocab", 8192),
                          ("seq", 256), ("batch", 8), ("steps", 10), ("warmup", 2),
                          ("threads", 1), ("max-seq", 0), ("kv-heads", 0), ("intermediate", 0)):
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--model", choices=("gpt", "llama"), default="gpt")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.model == "llama":
        model = llama.Llama(a.layers, a.embd, a.heads, a.kv_heads or a.heads, a.intermediate,
                            a.vocab, a.max_seq or a.seq)
    else:
        Vp = (a.vocab + 127) // 128 * 128
        model = ref.GPT(a.layers, a.heads, a.embd, a.vocab, Vp, a.max_seq or a.seq)
        model.init_gpt2(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    x = torch.randint(a.vocab, (a.batch, a.seq))
    y = torch.randint(a.vocab, (a.batch, a.seq))
    times = []
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        if s >= a.warmup:
            times.append(t1 - t0)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({"impl": "torch", "tokens_per_s": round(a.batch * a.seq / med, 1),
                      "step_s": round(med, 4), "min_step_s": round(times[0], 4),
                      "torch": torch.__version__,
                      "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}))


if __name__ == "__main__":
    main()
