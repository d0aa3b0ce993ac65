"""Compares two runs of the same job whose arithmetic differs only in the order of fp32 sums.

    compare.py M_REF W_REF M W W0 LABEL RANKS [first-step-bitwise]

M_* are metrics files (one JSON line per step), W_* final weights and W0 the initial weights (llm.c
model files). RANKS is the data-parallel size N of the run compared. `first-step-bitwise` when
both runs compute step 1's loss on the same path (a ZeRO stage against stage 0 on the same ranks).

Where the order differs (u = 2^-24, fp32's unit roundoff): N ranks each sum the gradient over
their slice of the batch and then across ranks, in a ring whose starting rank depends on the
element's chunk (all-reduce at stage 0, reduce-scatter of other chunks at stages 1-3), where one
process sums over the whole batch at once. A sum of k terms in another order differs by at most
2(k-1)u times the sum of the terms' magnitudes. Two terms commute, so at 2 ranks without clipping
every stage is bitwise equal to stage 0 (checked with cmp in dp_test.sh); the bounds below are for
what remains. A dropped rank (its gradient left out of the sum) gives, measured: losses 1e5 ulp
apart, gradient norms 24-93% apart, weights 30-47% of the training displacement apart.

  loss, step 1: the weights are still equal, so only the mean over the batch's tokens is
    reordered (N partial means, then their mean): within 2 ulp, bitwise when on the same path.
    Measured: 1 ulp, and bitwise.
  loss, every step: the weights drift apart by the rounding of each step's update, and the loss
    with them. Measured at most 2 ulp over 20 steps, at 2 and 4 ranks and every stage; bound 4 ulp.
  gradient norm, every step: the sum of squares is in fp64 over the fp32 gradients, so what
    differs is those gradients' last bits (a few u each, averaging out over 10^5 of them) and, at
    stages 1-3, the fp32 all-reduce of N partial sums of squares (at most (N-1)u on the square,
    half that on the norm): within N*u at step 1; bound 2N*u relative for the drift over 20 steps.
    Measured: at most 0.7u.
  weights: Adam's update m/(sqrt(v)+eps) does not change when the gradient is scaled, so a
    relative rounding difference r of the gradient moves the update by at most ~2r relative, and
    the final weights by ~2r of the distance they travelled, with r a few u times the gradients'
    cancellation (sum of |terms| over |sum|). Bound: the difference's L2 norm within 1e-5 of the
    training displacement |W_REF - W0| (measured at most 4.1e-6); a single float within 2e-5
    (measured 5.4e-6: floats whose gradient sits near eps, where m/sqrt(v) flips with the last
    bits of g, move furthest, but each step moves a weight by at most ~lr = 3e-3).
"""
import json
import sys

import numpy as np

U = 2.0**-24
LOSS_ULPS = 4
FIRST_LOSS_ULPS = 2
WEIGHT_L2_OF_DISPLACEMENT = 1e-5
WEIGHT_ATOL = 2e-5

m_ref, w_ref, m, w, w0, label, ranks = sys.argv[1:8]
first_bitwise = sys.argv[8:] == ["first-step-bitwise"]
n = int(ranks)
a = [json.loads(l) for l in open(m_ref)]
b = [json.loads(l) for l in open(m)]
assert len(a) == len(b) == 20, (len(a), len(b))


def ulps(x, y):
    """|x - y| in units of the last place of the larger, both as fp32."""
    x, y = np.float32(x), np.float32(y)
    return abs(float(x) - float(y)) / float(np.spacing(max(abs(x), abs(y))))


worst_loss = worst_norm = 0.0
for i, (x, y) in enumerate(zip(a, b)):
    d = ulps(x["loss"], y["loss"])
    worst_loss = max(worst_loss, d)
    if i == 0:
        limit = 0 if first_bitwise else FIRST_LOSS_ULPS
        assert d <= limit, f"{label}: step 1 loss {x['loss']} vs {y['loss']}: {d:.0f} ulp > {limit}"
    assert d <= LOSS_ULPS, f"{label}: step {x['step']} loss {x['loss']} vs {y['loss']}: {d:.0f} ulp"
    rel = abs(x["grad_norm"] - y["grad_norm"]) / x["grad_norm"]
    worst_norm = max(worst_norm, rel)
    limit = (1 if i == 0 else 2) * n * U
    assert rel <= limit, f"{label}: step {x['step']} grad norm {x['grad_norm']} vs {y['grad_norm']}: {rel:.2e} > {limit:.2e}"

wr = np.fromfile(w_ref, dtype="<f4")[256:].astype(np.float64)
wb = np.fromfile(w, dtype="<f4")[256:].astype(np.float64)
start = np.fromfile(w0, dtype="<f4")[256:].astype(np.float64)
diff = np.abs(wr - wb)
l2 = np.linalg.norm(diff) / np.linalg.norm(wr - start)
print(f"{label}: losses within {worst_loss:.0f} ulp, gradient norms within {worst_norm / U:.2f} u, "
      f"weights within {l2:.1e} of the displacement (L2), {diff.max():.1e} (max)")
assert l2 <= WEIGHT_L2_OF_DISPLACEMENT, f"{label}: weights differ by {l2:.2e} of the displacement"
assert diff.max() <= WEIGHT_ATOL, f"{label}: a weight differs by {diff.max():.2e}"
assert a[-1]["loss"] < a[0]["loss"] - 0.5, "training must make progress"
