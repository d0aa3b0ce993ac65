"""A small GPT trained with DeepSpeed: the "before" of docs/migrating-from-deepspeed.md.

ZeRO stage 2, bf16, AdamW, WarmupDecayLR, gradient accumulation and clipping all come from
ds_config.json; this script owns the model, the data, evaluation and checkpoints. dstrain runs
the same training from job.json (next to this file), which names ds_config.json unchanged.

    deepspeed --num_gpus 2 train.py --deepspeed --deepspeed_config ds_config.json

The data is llm.c's token shards, as `dstrain prepare --text input.txt --out data` writes them.
"""

import argparse
import glob
import math
import os

import deepspeed
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# The same shape as job.json's "model" block.
N_LAYER, N_HEAD, N_EMBD, VOCAB_SIZE, BLOCK_SIZE = 4, 4, 128, 256, 128


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(N_EMBD)
        self.c_attn = nn.Linear(N_EMBD, 3 * N_EMBD)
        self.attn_proj = nn.Linear(N_EMBD, N_EMBD)
        self.ln_2 = nn.LayerNorm(N_EMBD)
        self.c_fc = nn.Linear(N_EMBD, 4 * N_EMBD)
        self.mlp_proj = nn.Linear(4 * N_EMBD, N_EMBD)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(N_EMBD, dim=2)
        q, k, v = (z.view(b, t, N_HEAD, c // N_HEAD).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    """GPT-2's layout, as llm.c (and dstrain) have it: tied token embedding, pre-LayerNorm."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB_SIZE, N_EMBD)
        self.wpe = nn.Embedding(BLOCK_SIZE, N_EMBD)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.lm_head = nn.Linear(N_EMBD, VOCAB_SIZE, bias=False)
        self.lm_head.weight = self.wte.weight
        self.apply(self._init)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, VOCAB_SIZE), targets.view(-1))


def load_tokens(pattern):
    """Concatenates llm.c token shards: 256 int32 of header (magic 20240520), then uint16."""
    parts = []
    for path in sorted(glob.glob(pattern)):
        header = np.fromfile(path, dtype=np.int32, count=256)
        assert header[0] == 20240520, f"{path}: not an llm.c token shard"
        parts.append(np.fromfile(path, dtype=np.uint16, offset=256 * 4)[: header[2]])
    return np.concatenate(parts)


def batch(tokens, batch_size, rng, device):
    starts = rng.integers(0, len(tokens) - BLOCK_SIZE - 1, size=batch_size)
    window = np.stack([tokens[s : s + BLOCK_SIZE + 1] for s in starts]).astype(np.int64)
    window = torch.from_numpy(window).to(device)
    return window[:, :-1], window[:, 1:]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--checkpoint-dir", default="checkpoints")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--local_rank", type=int, default=-1)  # set by the launcher
    parser = deepspeed.add_config_arguments(parser)
    args = parser.parse_args()

    deepspeed.init_distributed()  # reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    torch.manual_seed(args.seed)
    model = GPT()
    # ds_config.json supplies ZeRO, bf16, the optimizer, the schedule and the batch triple.
    engine, _, _, _ = deepspeed.initialize(
        args=args, model=model, model_parameters=model.parameters()
    )

    train = load_tokens(os.path.join(args.data_dir, "train_*.bin"))
    val = load_tokens(os.path.join(args.data_dir, "val_*.bin"))
    rank = torch.distributed.get_rank()

    # Resume from the newest checkpoint, if there is one ("latest" names its tag).
    engine.load_checkpoint(args.checkpoint_dir)
    rng = np.random.default_rng([args.seed, rank, engine.global_steps])
    micro = engine.train_micro_batch_size_per_gpu()

    while engine.global_steps < args.train_steps:
        # One optimizer step: gradient_accumulation_steps micro-batches. DeepSpeed divides each
        # loss by the accumulation steps, and step() updates only at the boundary.
        for _ in range(engine.gradient_accumulation_steps()):
            x, y = batch(train, micro, rng, engine.device)
            loss = engine(x, y)
            engine.backward(loss)
            engine.step()
        step = engine.global_steps

        if step % args.eval_every == 0 or step == args.train_steps:
            engine.eval()
            eval_rng = np.random.default_rng([args.seed, 0])
            with torch.no_grad():
                losses = [engine(*batch(val, micro, eval_rng, engine.device)).item()
                          for _ in range(args.eval_batches)]
            engine.train()
            if rank == 0:
                val_loss = sum(losses) / len(losses)
                print(f"step {step}: val loss {val_loss:.4f} (perplexity {math.exp(val_loss):.1f})")

        if step % args.save_every == 0 or step == args.train_steps:
            # Every rank calls it; each writes its ZeRO partition.
            engine.save_checkpoint(args.checkpoint_dir, tag=f"step_{step:08d}")


if __name__ == "__main__":
    main()
