"""Compares a data-parallel run with the single-process run (see dp_test.sh for tolerances)."""
import json
import sys

import numpy as np

LOSS_RTOL = 1e-6
WEIGHT_ATOL = 2e-5

m1, w1, mn, wn, n = sys.argv[1:6]
a = [json.loads(l) for l in open(m1)]
b = [json.loads(l) for l in open(mn)]
assert len(a) == len(b) == 20, (len(a), len(b))
worst = 0.0
for x, y in zip(a, b):
    err = abs(x["loss"] - y["loss"]) / abs(x["loss"])
    worst = max(worst, err)
    assert err <= LOSS_RTOL, f"step {x['step']}: loss {x['loss']} vs {y['loss']} on {n} ranks"
    assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-4 * x["grad_norm"], (x, y)
wa = np.fromfile(w1, dtype="<f4")[256:]
wb = np.fromfile(wn, dtype="<f4")[256:]
diff = np.abs(wa.astype(np.float64) - wb)
print(f"{n} ranks: worst loss relative error {worst:.2e}, weights max |diff| {diff.max():.2e}")
assert diff.max() <= WEIGHT_ATOL, diff.max()
assert a[-1]["loss"] < a[0]["loss"] - 0.5, "training must make progress"
