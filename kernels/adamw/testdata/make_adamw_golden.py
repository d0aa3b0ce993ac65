"""Writes adamw_torch_golden.txt: PyTorch's own AdamW / Adam (L2) trajectories for adamw_test.

Run with Debian's interpreter, which sees python3-torch:  /usr/bin/python3 make_adamw_golden.py
The file records torch's version, then for each case the hyper-parameters, the initial
parameters and per-step gradients (values exactly representable in float32), and torch's
parameters, exp_avg and exp_avg_sq after every step, all printed with 9 significant digits
(exact float32 round trip).
"""
import torch

N = 203  # not a multiple of any vector width
STEPS = 3


def values(seed, n, scale):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1).mul(scale).float()


def case(out, name, adamw, lr, betas, eps, wd):
    p = torch.nn.Parameter(values(1, N, 1.0).clone())
    cls = torch.optim.AdamW if adamw else torch.optim.Adam
    opt = cls([p], lr=lr, betas=betas, eps=eps, weight_decay=wd, foreach=False)
    out.write(f"case {name} adamw={int(adamw)} lr={lr!r} beta1={betas[0]!r} "
              f"beta2={betas[1]!r} eps={eps!r} wd={wd!r} n={N} steps={STEPS}\n")
    out.write("p0 " + " ".join(f"{x:.9g}" for x in p.detach().tolist()) + "\n")
    for step in range(1, STEPS + 1):
        g = values(100 + step, N, 0.1 * step)
        p.grad = g.clone()
        opt.step()
        st = opt.state[p]
        out.write(f"g{step} " + " ".join(f"{x:.9g}" for x in g.tolist()) + "\n")
        out.write(f"p{step} " + " ".join(f"{x:.9g}" for x in p.detach().tolist()) + "\n")
        out.write(f"m{step} " + " ".join(f"{x:.9g}" for x in st["exp_avg"].tolist()) + "\n")
        out.write(f"v{step} " + " ".join(f"{x:.9g}" for x in st["exp_avg_sq"].tolist()) + "\n")


def main():
    torch.set_num_threads(1)
    with open("adamw_torch_golden.txt", "w") as out:
        out.write(f"torch {torch.__version__}\n")
        case(out, "adamw", True, 1e-3, (0.9, 0.999), 1e-8, 0.1)
        case(out, "adam_l2", False, 3e-3, (0.8, 0.99), 1e-6, 0.05)
        case(out, "adamw_no_decay", True, 6e-4, (0.9, 0.95), 1e-8, 0.0)


if __name__ == "__main__":
    main()
