"""compare_losses.py A.jsonl B.jsonl REL [FIRST_STEP]: the losses of the steps both runs logged
(from FIRST_STEP on) agree within relative tolerance REL; exit 1 naming the first step that does
not, or when the runs share no step."""
import json
import sys


def losses(path):
    out = {}
    for line in open(path):
        j = json.loads(line)
        out[j["step"]] = j["loss"]
    return out


a, b = losses(sys.argv[1]), losses(sys.argv[2])
rel = float(sys.argv[3])
first = int(sys.argv[4]) if len(sys.argv) > 4 else 1
steps = sorted(s for s in a if s in b and s >= first)
if not steps:
    sys.exit(f"no common steps from {first} in {sys.argv[1]} and {sys.argv[2]}")
worst = 0.0
for s in steps:
    d = abs(a[s] - b[s]) / max(abs(b[s]), 1e-30)
    worst = max(worst, d)
    if d > rel:
        sys.exit(f"step {s}: loss {a[s]!r} vs {b[s]!r} (relative {d:.2e} > {rel:.0e})")
print(f"steps {steps[0]}..{steps[-1]}: worst relative loss difference {worst:.2e} <= {rel:.0e}")
