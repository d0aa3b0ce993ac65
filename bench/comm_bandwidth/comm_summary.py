"""Summarises bench/comm_bandwidth runs: the median over rounds per (op, ranks, bytes, impl).

Reads the JSONL rows that comm_bench ("dstrain-gloo"), raw_gloo_bench ("raw-gloo") and
torch_gloo_bench.py ("torch-gloo") print, each file one run of one implementation in one round
(named IMPL.RANKS.ROUND.jsonl by comm_bandwidth.sh), and prints a Markdown table: the median bus
bandwidth of each implementation, the ratios dstrain/raw-gloo (the target) and dstrain/torch-gloo
of those medians, and the spread of the per-round dstrain/raw-gloo ratio (a round runs the
implementations back to back, so that ratio sees the same machine load on both sides). Then per
(op, ranks): the smallest dstrain/raw-gloo ratio from TARGET_FROM bytes up against the target, and
the latency floor (smallest median time over sizes) of each implementation.

Usage: comm_summary.py DIR [DIR...] (several directories: their rounds are pooled, e.g. to
combine runs made at different times).
"""
import collections
import glob
import json
import os
import re
import statistics
import sys

OURS, RAW, TORCH = "dstrain-gloo", "raw-gloo", "torch-gloo"
IMPLS = (OURS, RAW, TORCH)
OPS = ("allreduce", "reducescatter", "allgather")
TARGET = 0.95
TARGET_FROM = 16 << 20


def human(nbytes):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift} {unit}"
    return f"{nbytes} B"


def load(directories):
    # (op, ranks, bytes) -> impl -> round -> row; a round is (index of its directory, its number)
    rows = collections.defaultdict(lambda: collections.defaultdict(dict))
    algos = collections.defaultdict(set)
    paths = [(d, p) for d, directory in enumerate(directories)
             for p in sorted(glob.glob(os.path.join(directory, "*.jsonl")))]
    for d, path in paths:
        m = re.match(r"(.+)\.(\d+)\.(\d+)\.jsonl$", os.path.basename(path))
        round_ = (d, int(m.group(3)) if m else 0)
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                rows[(r["op"], r["ranks"], r["bytes"])][r["impl"]][round_] = r
                if "algo" in r:
                    algos[(r["impl"], r["op"])].add(r["algo"])
    return rows, algos


def fmt(x, spec=".3f"):
    return "n/a" if x is None else format(x, spec)


def main(directories):
    rows, algos = load(directories)
    med = {}  # (op, ranks, bytes, impl) -> (median busbw, median time, rounds)
    for key, by_impl in rows.items():
        for impl, by_round in by_impl.items():
            bw = [r["busbw_gbs"] for r in by_round.values()]
            t = [r["time_us"] for r in by_round.values()]
            med[key + (impl,)] = (statistics.median(bw), statistics.median(t), len(bw))

    def get(key, impl, i):
        v = med.get(key + (impl,))
        return None if v is None else v[i]

    def ratio(a, b):
        return a / b if a is not None and b else None

    print("Median over rounds; busbw in GB/s (nccl-tests' definition), times in us.")
    print("| op | ranks | size | dstrain busbw | raw-gloo busbw | torch-gloo busbw "
          "| dstrain/raw | dstrain/torch | dstrain/raw per round (min..max) "
          "| dstrain time | raw time | torch time | rounds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    unverified = []
    keys = sorted(rows, key=lambda k: (OPS.index(k[0]) if k[0] in OPS else 9, k[1], k[2]))
    for key in keys:
        op, n, nbytes = key
        ours, raw, torch = (get(key, i, 0) for i in IMPLS)
        wrong = sorted(r for impl in IMPLS for r, row in rows[key].get(impl, {}).items()
                       if row.get("verified") is False)
        if wrong:
            unverified.append(f"{op}/{n}/{human(nbytes)} in {len(wrong)} of "
                              f"{len(rows[key].get(RAW, {}))} rounds")
        per_round = [
            rows[key][OURS][r]["busbw_gbs"] / rows[key][RAW][r]["busbw_gbs"]
            for r in rows[key].get(OURS, {})
            if r in rows[key].get(RAW, {}) and rows[key][RAW][r]["busbw_gbs"] > 0
        ]
        spread = f"{min(per_round):.2f}..{max(per_round):.2f}" if per_round else "n/a"
        counts = "/".join(str(get(key, i, 2) or 0) for i in IMPLS)
        mark = " (!)" if wrong else ""
        print(f"| {op} | {n} | {human(nbytes)} | {fmt(ours)} | {fmt(raw)}{mark} | {fmt(torch)} "
              f"| {fmt(ratio(ours, raw), '.2f')} | {fmt(ratio(ours, torch), '.2f')} | {spread} "
              f"| {fmt(get(key, OURS, 1), '.0f')} | {fmt(get(key, RAW, 1), '.0f')} "
              f"| {fmt(get(key, TORCH, 1), '.0f')} | {counts} |")
    print("\nrounds: runs that produced the row, dstrain/raw-gloo/torch-gloo.")
    if unverified:
        print("(!) raw Gloo returned a WRONG result (its own check, \"verified\": false) at "
              f"{'; '.join(unverified)}; the timing is still shown.")
    used = "; ".join(f"{op}: {', '.join(sorted(algos[(RAW, op)]))}" for op in OPS
                     if algos.get((RAW, op)))
    if used:
        print(f"raw-gloo algorithms: {used}.")

    print(f"\nSummary (target: dstrain >= {TARGET:.0%} of raw Gloo from {human(TARGET_FROM)} up):")
    groups = sorted({(k[0], k[1]) for k in rows},
                    key=lambda g: (OPS.index(g[0]) if g[0] in OPS else 9, g[1]))
    below, evaluated = [], False
    for op, n in groups:
        sizes = sorted(k[2] for k in rows if k[:2] == (op, n))
        big = [(ratio(get((op, n, b), OURS, 0), get((op, n, b), RAW, 0)), b) for b in sizes
               if b >= TARGET_FROM]
        big = [(r, b) for r, b in big if r is not None]
        if big:
            worst, at = min(big)
            evaluated = True
            verdict = "meets" if worst >= TARGET else "BELOW"
            if worst < TARGET:
                below.append(f"{op}/{n}")
            target = f"min dstrain/raw {worst:.2f} (at {human(at)}, {verdict} target)"
        else:
            target = "min dstrain/raw n/a (no size >= target size in both)"
        floors = []
        for impl in IMPLS:
            times = [(get((op, n, b), impl, 1), b) for b in sizes]
            times = [(t, b) for t, b in times if t is not None]
            if times:
                t, b = min(times)
                floors.append(f"{impl.split('-')[0]} {t:.0f} us @ {human(b)}")
        print(f"- {op}, {n} ranks: {target}; latency floor: {', '.join(floors)}")
    if not evaluated:
        print(f"Overall: target not evaluated (no size >= {human(TARGET_FROM)} measured).")
    elif below:
        print(f"Overall: target NOT met for {', '.join(below)}.")
    else:
        print("Overall: target met for every op and rank count measured.")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: comm_summary.py DIR [DIR...]")
    main(sys.argv[1:])
